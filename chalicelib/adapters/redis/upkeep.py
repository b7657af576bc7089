"""The sweeper's reads and marks on the queue: expired leases and the partitions'
sentinels (lost on a restart or flush, set again after a rebuild): a mixin of
``queue.Queue``, which holds the client, the keys and the scripts."""

from __future__ import annotations

from collections.abc import Iterable

from chalicelib.adapters.redis.client import RedisLike, ScriptLike, as_text, translate
from chalicelib.adapters.redis.keys import Keys
from chalicelib.core.errors import QueueError


class QueueUpkeep:
    """What the sweeper asks of ``Queue`` before it rescues or rebuilds."""

    client: RedisLike
    parts: list[Keys]
    _expired: ScriptLike

    def expired_leases(self, limit: int) -> list[str]:
        """Up to ``limit`` ids whose Redis lease deadline passed, every partition's."""
        out: list[str] = []
        failed: QueueError | None = None
        for part in self.parts:
            if len(out) >= limit:
                break
            try:  # one partition's master unreachable: the others' still count
                with translate():
                    raw = self._expired(keys=[part.leases], args=[limit - len(out)])
            except QueueError as exc:
                failed = failed or exc
                continue
            out += [as_text(r) for r in raw]
        if failed is not None and not out:
            raise failed
        return out

    def lost_partitions(self) -> list[int]:
        """The partitions whose sentinel is gone (Redis restarted empty or was flushed,
        or in a cluster the master holding that partition's slot did); one round trip."""
        with translate():
            pipe = self.client.pipeline(transaction=False)
            for part in self.parts:
                pipe.exists(part.epoch)
            found = pipe.execute()
        return [p for p, n in enumerate(found) if not n]

    def needs_rebuild(self) -> bool:
        """True when any partition's sentinel is gone."""
        return bool(self.lost_partitions())

    def mark_rebuilt(self, partitions: Iterable[int] | None = None) -> None:
        """Set the sentinel of ``partitions`` (None: all)."""
        with translate():
            pipe = self.client.pipeline(transaction=False)
            for p in range(len(self.parts)) if partitions is None else partitions:
                pipe.set(self.parts[p].epoch, "1")
            pipe.execute()
