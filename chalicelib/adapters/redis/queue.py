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

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import redis
from redis.exceptions import RedisError

from chalicelib.config import TypeLimit
from chalicelib.core.errors import QueueError
from chalicelib.core.model import Priority

# KEYS[1] ready, KEYS[2] delayed, KEYS[3] leases
# ARGV[1] how many ids to claim, ARGV[2] lease (ms), ARGV[3] aging head start per
# priority level (ms), ARGV[4] most delayed ids to promote in one call, ARGV[5] the
# key prefix "{p}", ARGV[6] L = number of limited task types, then L groups of
# (name, max concurrency or 0, rate per second or 0, burst).
# Returns a flat list: id, task type name ('' for an unlimited type), id, name, ...
#
# Nothing is popped destructively: every id leaves a ready set only by entering
# ``leases`` in the same atomic step, so a drainer that dies after this call leaves
# a trail the sweeper follows.  Time is Redis's own clock so that every drainer
# agrees on what is due.
#
# Limited task types wait in ready sets of their own ({p}:ready:<name>).  Each call
# looks at the head of the main ready set and, per limited type, only as many ids
# as its free concurrency slots ({p}:inflight:<name>, scored by lease deadline so a
# dead drainer's slots free themselves) and its token bucket ({p}:rate:<name>)
# allow; candidates are merged by score.  A throttled type is simply not looked
# at, so it never blocks the others (no head-of-line blocking).  The keys are
# built from the prefix; they share its hash tag, so they live in one cluster slot.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = tonumber(ARGV[1])
local aging = tonumber(ARGV[3])
local prefix = ARGV[5]
local limited = {}
local nlimited = tonumber(ARGV[6])
for i = 0, nlimited - 1 do
  local b = 7 + i * 4
  limited[ARGV[b]] = {conc = tonumber(ARGV[b + 1]), rate = tonumber(ARGV[b + 2]), burst = tonumber(ARGV[b + 3])}
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
for i = 1, #due, 2 do
  -- member: "<rank>:<uuid>" or "<rank>:<uuid>:<type>" for a limited type
  local member = due[i]
  local rank = tonumber(string.sub(member, 1, 1))
  local id = string.sub(member, 3, 38)
  local target = KEYS[1]
  if #member > 39 and limited[string.sub(member, 40)] then
    target = prefix .. ':ready:' .. string.sub(member, 40)
  end
  redis.call('ZADD', target, 'NX', tonumber(due[i + 1]) - (3 - rank) * aging, id)
  redis.call('ZREM', KEYS[2], member)
end

local deadline = now + tonumber(ARGV[2])
local out = {}
if nlimited == 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], count)
  if #popped > 0 then
    local leased = {}
    for i = 1, #popped, 2 do
      out[#out + 1] = popped[i]
      out[#out + 1] = ''
      leased[#leased + 1] = deadline
      leased[#leased + 1] = popped[i]
    end
    redis.call('ZADD', KEYS[3], unpack(leased))
  end
  return out
end

local cands = {}
local head = redis.call('ZRANGE', KEYS[1], 0, count - 1, 'WITHSCORES')
for i = 1, #head, 2 do
  cands[#cands + 1] = {tonumber(head[i + 1]), head[i], ''}
end
for name, lim in pairs(limited) do
  local allowed = count
  if lim.conc > 0 then
    local inflight = prefix .. ':inflight:' .. name
    redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
    allowed = math.min(allowed, lim.conc - redis.call('ZCARD', inflight))
  end
  if lim.rate > 0 then
    local state = redis.call('HMGET', prefix .. ':rate:' .. name, 'tokens', 'ts')
    local tokens = tonumber(state[1]) or lim.burst
    local ts = tonumber(state[2]) or now
    tokens = math.min(lim.burst, tokens + (now - ts) * lim.rate / 1000)
    lim.tokens = tokens
    allowed = math.min(allowed, math.floor(tokens))
  end
  if allowed > 0 then
    local c = redis.call('ZRANGE', prefix .. ':ready:' .. name, 0, allowed - 1, 'WITHSCORES')
    for i = 1, #c, 2 do
      cands[#cands + 1] = {tonumber(c[i + 1]), c[i], name}
    end
  end
end
table.sort(cands, function(a, b) return a[1] < b[1] end)

local taken = {}
for i = 1, math.min(count, #cands) do
  local id, name = cands[i][2], cands[i][3]
  if name == '' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZREM', prefix .. ':ready:' .. name, id)
    if limited[name].conc > 0 then
      redis.call('ZADD', prefix .. ':inflight:' .. name, deadline, id)
    end
    taken[name] = (taken[name] or 0) + 1
  end
  redis.call('ZADD', KEYS[3], deadline, id)
  out[#out + 1] = id
  out[#out + 1] = name
end
for name, lim in pairs(limited) do
  if lim.rate > 0 then
    local key = prefix .. ':rate:' .. name
    redis.call('HSET', key, 'tokens', lim.tokens - (taken[name] or 0), 'ts', now)
    redis.call('PEXPIRE', key, math.ceil(lim.burst / lim.rate * 1000) + 1000)
  end
end
return out
"""

# KEYS[1] leases; ARGV[1] lease (ms), ARGV[2] key prefix, ARGV[3..] pairs of
# (id, task type name or '' when the type is unlimited)
# Pushes the deadline of leases (and concurrency slots) still present; XX: an id
# acked meanwhile stays gone.
_EXTEND = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local n = 0
for i = 3, #ARGV, 2 do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
  if ARGV[i + 1] ~= '' then
    redis.call('ZADD', ARGV[2] .. ':inflight:' .. ARGV[i + 1], 'XX', deadline, ARGV[i])
  end
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
    def get(self, name: Any) -> Any: ...
    def zcard(self, name: Any) -> Any: ...


# (id, priority, time in ms) and, where the task type matters, its name as a fourth item.
Item = tuple[str, Priority, float] | tuple[str, Priority, float, str]


def delayed_member(task_id: str, priority: Priority, name: str | None = None) -> str:
    return f"{priority.rank}:{task_id}:{name}" if name else f"{priority.rank}:{task_id}"


class Queue:
    """Ready, delayed and lease structures for task ids."""

    def __init__(
        self,
        client: RedisLike,
        *,
        prefix: str = "tasklane",
        aging_seconds: int = 300,
        limits: Mapping[str, TypeLimit] | None = None,
    ) -> None:
        self.client = client
        tag = "{" + prefix + "}"
        self.tag = tag
        self.limits = dict(limits or {})
        self._limit_args: list[str | int | float] = [len(self.limits)]
        for name, lim in sorted(self.limits.items()):
            self._limit_args += [name, lim.concurrency, lim.rate_per_second, max(lim.burst, 1)]
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
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tasklane",
        aging_seconds: int = 300,
        limits: Mapping[str, TypeLimit] | None = None,
    ) -> Queue:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30)
        return cls(client, prefix=prefix, aging_seconds=aging_seconds, limits=limits)

    def _limited(self, name: str | None) -> str | None:
        """``name`` when that task type has limits (its ids live in sets of their own)."""
        return name if name is not None and name in self.limits else None

    def _ready_key(self, name: str | None) -> str:
        limited = self._limited(name)
        return f"{self.tag}:ready:{limited}" if limited else self.ready_key

    def _member(self, item: Item) -> str:
        return delayed_member(item[0], item[1], self._limited(item[3] if len(item) > 3 else None))

    def score(self, enqueued_ms: float, priority: Priority) -> float:
        return float(enqueued_ms - (3 - priority.rank) * self.aging_ms)

    # --- producers ---------------------------------------------------------------------

    def push(
        self,
        ready: Iterable[Item] = (),
        delayed: Iterable[Item] = (),
        *,
        only_new: bool = False,
    ) -> None:
        """Add ``(id, priority, enqueued_ms[, name])`` to ready and ``(id, priority,
        due_ms[, name])`` to delayed, waking idle drainers; one round trip.  The name
        routes limited task types to their own sets.  ``only_new`` keeps existing
        scores (rebuilds must not reorder what is already there)."""
        by_key: dict[str, dict[str, float]] = {}
        for item in ready:
            key = self._ready_key(item[3] if len(item) > 3 else None)
            by_key.setdefault(key, {})[item[0]] = self.score(item[2], item[1])
        delayed_map = {self._member(item): item[2] for item in delayed}
        if not by_key and not delayed_map:
            return
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            if by_key:
                for key, mapping in by_key.items():
                    pipe.zadd(key, mapping, nx=only_new)
                n = sum(len(m) for m in by_key.values())
                pipe.lpush(self.wake_key, *(["1"] * min(n, _WAKE_TOKENS)))
                pipe.ltrim(self.wake_key, 0, _WAKE_TOKENS - 1)
            if delayed_map:
                pipe.zadd(self.delayed_key, delayed_map, nx=only_new)
                # A drainer may be idle until the earliest due time: wake it to look.
                pipe.lpush(self.wake_key, "1")
                pipe.ltrim(self.wake_key, 0, _WAKE_TOKENS - 1)
            pipe.execute()

    def remove(self, items: Sequence[tuple[str, Priority, str | None]]) -> None:
        """Drop ``(id, priority, task type)`` from ready and delayed (e.g. cancelled);
        best effort, one round trip."""
        if not items:
            return
        by_key: dict[str, list[str]] = {}
        for tid, _, name in items:
            by_key.setdefault(self._ready_key(name), []).append(tid)
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.zrem(key, *ids)
            pipe.zrem(self.delayed_key, *[delayed_member(tid, prio, self._limited(name)) for tid, prio, name in items])
            pipe.execute()

    # --- consumers ---------------------------------------------------------------------

    def claim(self, count: int, lease_seconds: float) -> dict[str, str]:
        """Move up to ``count`` ready ids (due delayed ones included) into the lease set,
        within the per-type limits; returns ``{id: task type name or ""}`` in claim order."""
        with _translate():
            raw = self._claim(
                keys=[self.ready_key, self.delayed_key, self.leases_key],
                args=[count, int(lease_seconds * 1000), self.aging_ms, max(count, 100), self.tag, *self._limit_args],
            )
        flat = [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
        return dict(zip(flat[::2], flat[1::2], strict=True))

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

    def extend(self, ids: Sequence[str], lease_seconds: float, names: Mapping[str, str] | None = None) -> None:
        """Heartbeat: push lease deadlines (and the concurrency slots of limited types)."""
        if ids:
            args: list[str | int] = [int(lease_seconds * 1000), self.tag]
            for tid in ids:
                args += [tid, self._limited((names or {}).get(tid)) or ""]
            with _translate():
                self._extend(keys=[self.leases_key], args=args)

    def ack(self, ids: Sequence[str], retries: Iterable[Item] = (), names: Mapping[str, str] | None = None) -> None:
        """Release leases (and concurrency slots: ``names`` maps ids to task types) and put
        retries (``(id, priority, due_ms[, name])``) in delayed: one round trip."""
        delayed_map = {self._member(item): item[2] for item in retries}
        slots: dict[str, list[str]] = {}
        for tid in ids:
            limited = self._limited((names or {}).get(tid))
            if limited and self.limits[limited].concurrency:
                slots.setdefault(limited, []).append(tid)
        if not ids and not delayed_map:
            return
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            if ids:
                pipe.zrem(self.leases_key, *ids)
            for name, members in slots.items():
                pipe.zrem(f"{self.tag}:inflight:{name}", *members)
            if slots:
                # A freed slot may unblock a throttled type: let an idle drainer look.
                pipe.lpush(self.wake_key, "1")
                pipe.ltrim(self.wake_key, 0, _WAKE_TOKENS - 1)
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

    def lease_all(self, leases: Iterable[tuple[str, float, str]]) -> None:
        """Restore lease entries ``(id, deadline_ms, task type)`` after a rebuild, with the
        concurrency slots of limited types."""
        mapping: dict[str, float] = {}
        slots: dict[str, dict[str, float]] = {}
        for tid, deadline, name in leases:
            mapping[tid] = deadline
            limited = self._limited(name)
            if limited:
                slots.setdefault(limited, {})[tid] = deadline
        if mapping:
            with _translate():
                pipe = self.client.pipeline(transaction=False)
                pipe.zadd(self.leases_key, mapping, nx=True)
                for name, members in slots.items():
                    pipe.zadd(f"{self.tag}:inflight:{name}", members, nx=True)
                pipe.execute()

    def depths(self) -> dict[str, int]:
        """Sizes of ready (limited types' sets included), delayed and leases."""
        snap = self.snapshot()
        return {k: int(snap[k] or 0) for k in ("ready", "delayed", "leased")}

    def ping(self) -> None:
        with _translate():
            self.client.ping()

    # --- read-only views for metrics and health ------------------------------------------

    @property
    def last_sweep_key(self) -> str:
        """Where the sweeper records when it last ran (epoch seconds)."""
        return f"{self.tag}:last_sweep"

    def mark_swept(self) -> None:
        """Record that a sweep just finished (health and metrics read it)."""
        with _translate():
            self.client.set(self.last_sweep_key, f"{time.time():.3f}")

    def last_sweep(self) -> float | None:
        """When a sweep last finished (epoch seconds), None if none is recorded; one
        round trip that also proves Redis answers."""
        with _translate():
            return _epoch(self.client.get(self.last_sweep_key))

    def snapshot(self) -> dict[str, float | None]:
        """Sizes of ready, delayed and leases plus the last sweep time; one round trip."""
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(self.ready_key)
            pipe.zcard(self.delayed_key)
            pipe.zcard(self.leases_key)
            pipe.get(self.last_sweep_key)
            for name in self.limits:
                pipe.zcard(self._ready_key(name))
            ready, delayed, leased, raw, *typed = pipe.execute()
        ready = int(ready) + sum(int(n) for n in typed)
        return {"ready": ready, "delayed": int(delayed), "leased": int(leased), "last_sweep": _epoch(raw)}


def _epoch(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        return None


class _translate:
    """Turns redis-py errors into ``QueueError`` at this one boundary."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is not None and isinstance(exc, RedisError):
            raise QueueError(f"Redis is unreachable or failed: {exc}") from exc
        return False
