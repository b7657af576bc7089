"""Whether a drainer is alive, so the API knows when to wake one (see
``chalicelib.adapters.aws.wake``).  Two expiring keys: a heartbeat every drainer
refreshes, and a short guard that lets one request of a burst do the waking."""

from __future__ import annotations

from chalicelib.adapters.redis.client import RedisLike, translate
from chalicelib.adapters.redis.keys import Keys


class Presence:
    """Drainer heartbeat and waker guard; Redis failures raise ``QueueError``."""

    def __init__(self, client: RedisLike, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def mark_alive(self, ttl_seconds: float) -> None:
        """A drainer is running; the mark lapses ``ttl_seconds`` after its last refresh."""
        with translate():
            self.client.set(self.keys.drainer_alive, "1", px=max(int(ttl_seconds * 1000), 1))

    def any_alive(self) -> bool:
        with translate():
            return bool(self.client.exists(self.keys.drainer_alive))

    def claim_waker(self, ttl_seconds: float) -> bool:
        """True for the one caller of a burst that should wake drainers."""
        with translate():
            return bool(self.client.set(self.keys.drainer_waking, "1", nx=True, px=max(int(ttl_seconds * 1000), 1)))
