"""Redis adapter: the fast queue.  Redis holds only ids and scores, so the sweeper
can always rebuild it from PostgreSQL.

Keys (one hash tag, so the multi-key Lua scripts also run on Redis Cluster):
- ``{p}:ready``   sorted set of task ids scored by ``tasks.ready_score`` (ZPOPMIN serves
  priority order with aging)
- ``{p}:delayed`` sorted set of ``"<rank>:<id>"`` scored by due time (ms); the rank rides
  in the member so a due id can move to ``ready`` with its priority head start
- ``{p}:leases``  sorted set of claimed ids scored by lease deadline (ms)
- ``{p}:wake``    a short list; submit pushes a token, idle drainers BLPOP it
- ``{p}:epoch``   sentinel: missing means Redis lost its data and must be rebuilt
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import redis
from redis.exceptions import RedisError

from chalicelib.errors import QueueError
from chalicelib.tasks import Priority

# KEYS[1] ready, KEYS[2] delayed, KEYS[3] leases
# ARGV[1] how many ids to claim, ARGV[2] lease (ms), ARGV[3] aging head start per
# priority level (ms), ARGV[4] most delayed ids to promote in one call
# Returns the claimed ids.  Nothing is popped destructively: every id leaves
# ``ready`` only by entering ``leases`` in the same atomic step, so a drainer that
# dies after this call leaves a trail the sweeper follows.  Time is Redis's own
# clock so that every drainer agrees on what is due.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local aging = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
if #due > 0 then
  local adds = {}
  local rems = {}
  for i = 1, #due, 2 do
    local member = due[i]
    local rank = tonumber(string.sub(member, 1, 1))
    adds[#adds + 1] = tonumber(due[i + 1]) - (3 - rank) * aging
    adds[#adds + 1] = string.sub(member, 3)
    rems[#rems + 1] = member
  end
  redis.call('ZADD', KEYS[1], 'NX', unpack(adds))
  redis.call('ZREM', KEYS[2], unpack(rems))
end
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[1]))
local ids = {}
if #popped > 0 then
  local deadline = now + tonumber(ARGV[2])
  local leased = {}
  for i = 1, #popped, 2 do
    ids[#ids + 1] = popped[i]
    leased[#leased + 1] = deadline
    leased[#leased + 1] = popped[i]
  end
  redis.call('ZADD', KEYS[3], unpack(leased))
end
return ids
"""

# KEYS[1] leases; ARGV[1] lease (ms), ARGV[2..] ids
# Pushes the deadline of leases still present (XX: an id acked meanwhile stays gone).
_EXTEND = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
end
return n
"""

# KEYS[1] leases; ARGV[1] limit
# Ids whose Redis lease deadline has passed (by Redis's clock).
_EXPIRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

_WAKE_TOKENS = 8  # enough to rouse every idle drainer; bounded so the list never grows


class RedisLike(Protocol):
    """The subset of ``redis.Redis`` the queue uses."""

    def register_script(self, script: str) -> Any: ...
    def pipeline(self, transaction: bool = True) -> Any: ...
    def blpop(self, keys: Any, timeout: float | None = 0) -> Any: ...
    def ping(self) -> Any: ...
    def exists(self, *names: Any) -> Any: ...
    def set(self, name: Any, value: Any) -> Any: ...
    def zcard(self, name: Any) -> Any: ...


def delayed_member(task_id: str, priority: Priority) -> str:
    return f"{priority.rank}:{task_id}"


class Queue:
    """Ready, delayed and lease structures for task ids."""

    def __init__(self, client: RedisLike, *, prefix: str = "tasklane", aging_seconds: int = 300) -> None:
        self.client = client
        tag = "{" + prefix + "}"
        self.ready_key = f"{tag}:ready"
        self.delayed_key = f"{tag}:delayed"
        self.leases_key = f"{tag}:leases"
        self.wake_key = f"{tag}:wake"
        self.epoch_key = f"{tag}:epoch"
        self.aging_ms = aging_seconds * 1000
        self._claim = client.register_script(_CLAIM)
        self._extend = client.register_script(_EXTEND)
        self._expired = client.register_script(_EXPIRED)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "tasklane", aging_seconds: int = 300) -> Queue:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30)
        return cls(client, prefix=prefix, aging_seconds=aging_seconds)

    def score(self, enqueued_ms: float, priority: Priority) -> float:
        return float(enqueued_ms - (3 - priority.rank) * self.aging_ms)

    # --- producers ---------------------------------------------------------------------

    def push(
        self,
        ready: Iterable[tuple[str, Priority, float]] = (),
        delayed: Iterable[tuple[str, Priority, float]] = (),
        *,
        only_new: bool = False,
    ) -> None:
        """Add ``(id, priority, enqueued_ms)`` to ready and ``(id, priority, due_ms)`` to
        delayed, waking idle drainers; one round trip.  ``only_new`` keeps existing
        scores (rebuilds must not reorder what is already there)."""
        ready_map = {tid: self.score(ms, prio) for tid, prio, ms in ready}
        delayed_map = {delayed_member(tid, prio): ms for tid, prio, ms in delayed}
        if not ready_map and not delayed_map:
            return
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            if ready_map:
                pipe.zadd(self.ready_key, ready_map, nx=only_new)
                pipe.lpush(self.wake_key, *(["1"] * min(len(ready_map), _WAKE_TOKENS)))
                pipe.ltrim(self.wake_key, 0, _WAKE_TOKENS - 1)
            if delayed_map:
                pipe.zadd(self.delayed_key, delayed_map, nx=only_new)
                # A drainer may be idle until the earliest due time: wake it to look.
                pipe.lpush(self.wake_key, "1")
                pipe.ltrim(self.wake_key, 0, _WAKE_TOKENS - 1)
            pipe.execute()

    def remove(self, ids: Sequence[tuple[str, Priority]]) -> None:
        """Drop ids from ready and delayed (e.g. cancelled); best effort, one round trip."""
        if not ids:
            return
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self.ready_key, *[tid for tid, _ in ids])
            pipe.zrem(self.delayed_key, *[delayed_member(tid, prio) for tid, prio in ids])
            pipe.execute()

    # --- consumers ---------------------------------------------------------------------

    def claim(self, count: int, lease_seconds: float) -> list[str]:
        """Move up to ``count`` ready ids (due delayed ones included) into the lease set."""
        with _translate():
            raw = self._claim(
                keys=[self.ready_key, self.delayed_key, self.leases_key],
                args=[count, int(lease_seconds * 1000), self.aging_ms, max(count, 100)],
            )
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    def wait_for_work(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a wake token; True when one came."""
        with _translate():
            return self.client.blpop([self.wake_key], timeout=max(timeout, 0.01)) is not None

    def wake(self) -> None:
        """Rouse idle drainers (more work may be waiting)."""
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.wake_key, "1")
            pipe.ltrim(self.wake_key, 0, _WAKE_TOKENS - 1)
            pipe.execute()

    def extend(self, ids: Sequence[str], lease_seconds: float) -> None:
        if ids:
            with _translate():
                self._extend(keys=[self.leases_key], args=[int(lease_seconds * 1000), *ids])

    def ack(self, ids: Sequence[str], retries: Iterable[tuple[str, Priority, float]] = ()) -> None:
        """Release leases and put retries (``(id, priority, due_ms)``) in delayed: one trip."""
        delayed_map = {delayed_member(tid, prio): ms for tid, prio, ms in retries}
        if not ids and not delayed_map:
            return
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            if ids:
                pipe.zrem(self.leases_key, *ids)
            if delayed_map:
                pipe.zadd(self.delayed_key, delayed_map)
            pipe.execute()

    # --- sweeper -----------------------------------------------------------------------

    def expired_leases(self, limit: int) -> list[str]:
        with _translate():
            raw = self._expired(keys=[self.leases_key], args=[limit])
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    def needs_rebuild(self) -> bool:
        """True when the sentinel is gone: Redis restarted empty or was flushed."""
        with _translate():
            return not self.client.exists(self.epoch_key)

    def mark_rebuilt(self) -> None:
        with _translate():
            self.client.set(self.epoch_key, "1")

    def lease_all(self, leases: Iterable[tuple[str, float]]) -> None:
        """Restore lease entries ``(id, deadline_ms)`` after a rebuild."""
        mapping = dict(leases)
        if mapping:
            with _translate():
                pipe = self.client.pipeline(transaction=False)
                pipe.zadd(self.leases_key, mapping, nx=True)
                pipe.execute()

    def depths(self) -> dict[str, int]:
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(self.ready_key)
            pipe.zcard(self.delayed_key)
            pipe.zcard(self.leases_key)
            ready, delayed, leased = pipe.execute()
        return {"ready": int(ready), "delayed": int(delayed), "leased": int(leased)}

    def ping(self) -> None:
        with _translate():
            self.client.ping()


class _translate:
    """Turns redis-py errors into ``QueueError`` at this one boundary."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is not None and isinstance(exc, RedisError):
            raise QueueError(f"Redis is unreachable or failed: {exc}") from exc
        return False
