"""Redis adapter: the fast queue.  Redis holds only ids and scores, so the sweeper
can always rebuild it from PostgreSQL.  Key names and lifetimes: ``keys.py``.

- ready sets score ids by ``core.model.ready_score`` (ZPOPMIN serves priority order
  with aging); task types with limits have ready sets of their own;
- ``delayed`` holds ``"<rank>:<id>[:<task type>]"`` scored by due time (ms): the rank
  rides in the member so a due id moves to ready with its priority head start;
- ``leases`` holds claimed ids scored by lease deadline (ms);
- ``wake`` is a short list of tokens idle drainers BLPOP.

Every Redis error leaves this module as ``QueueError`` (``client.translate``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chalicelib.adapters.redis.client import RedisLike, connect, translate
from chalicelib.adapters.redis.keys import Keys
from chalicelib.adapters.redis.presence import Presence
from chalicelib.config import TypeLimit
from chalicelib.core.model import Priority, QueueEntry, head_start_ms, ready_score

# The aging rule of ``core.model.ready_score`` in Lua, fed the head starts that
# ``core.model.head_start_ms`` computed (``head[rank + 1]``, rank 0 = critical).
# The claim script applies it to due delayed ids; a property test runs this very
# text against Python's definition on random inputs.
READY_SCORE_LUA = """
local function ready_score(at, rank, head)
  return at - head[rank + 1]
end
"""

_CLAIM_CONTRACT = """
-- KEYS[1] ready, KEYS[2] delayed, KEYS[3] leases; then, for each of the L task types
--   with limits (in ARGV order, i = 0 .. L-1): KEYS[4+3i] its ready set,
--   KEYS[5+3i] its inflight set, KEYS[6+3i] its token bucket
-- ARGV[1] how many ids to claim, ARGV[2] lease (ms), ARGV[3] most delayed ids to
--   promote in one call, ARGV[4..7] head start (ms) of priority rank 0..3,
--   ARGV[8] L, then L groups of (name, max concurrency or 0, rate per second or 0, burst)
-- Returns a flat list in claim (score) order: id, task type name ('' when unlimited), ...
"""

# Nothing is popped destructively: every id leaves a ready set only by entering
# ``leases`` in the same atomic step, so a drainer that dies after this call leaves
# a trail the sweeper follows.  Time is Redis's own clock so that every drainer
# agrees on what is due.
#
# Each call looks at the head of the main ready set and, per limited type, only as
# many ids as its free concurrency slots (the inflight set, scored by lease deadline
# so a dead drainer's slots free themselves) and its token bucket allow; candidates
# are merged by score.  A throttled type is simply not looked at, so it never
# blocks the others (no head-of-line blocking).
_CLAIM_BODY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = tonumber(ARGV[1])
local head = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local limited = {}
local nlimited = tonumber(ARGV[8])
for i = 0, nlimited - 1 do
  local b = 9 + i * 4
  local k = 4 + i * 3
  limited[ARGV[b]] = {conc = tonumber(ARGV[b + 1]), rate = tonumber(ARGV[b + 2]), burst = tonumber(ARGV[b + 3]),
                      ready = KEYS[k], inflight = KEYS[k + 1], bucket = KEYS[k + 2]}
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #due, 2 do
  -- member: "<rank>:<uuid>" or "<rank>:<uuid>:<type>" for a limited type
  local member = due[i]
  local rank = tonumber(string.sub(member, 1, 1))
  local id = string.sub(member, 3, 38)
  local target = KEYS[1]
  if #member > 39 and limited[string.sub(member, 40)] then
    target = limited[string.sub(member, 40)].ready
  end
  redis.call('ZADD', target, 'NX', ready_score(tonumber(due[i + 1]), rank, head), id)
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
local first = redis.call('ZRANGE', KEYS[1], 0, count - 1, 'WITHSCORES')
for i = 1, #first, 2 do
  cands[#cands + 1] = {tonumber(first[i + 1]), first[i], ''}
end
for name, lim in pairs(limited) do
  local allowed = count
  if lim.conc > 0 then
    redis.call('ZREMRANGEBYSCORE', lim.inflight, '-inf', now)
    allowed = math.min(allowed, lim.conc - redis.call('ZCARD', lim.inflight))
  end
  if lim.rate > 0 then
    local state = redis.call('HMGET', lim.bucket, 'tokens', 'ts')
    local tokens = tonumber(state[1]) or lim.burst
    local ts = tonumber(state[2]) or now
    tokens = math.min(lim.burst, tokens + (now - ts) * lim.rate / 1000)
    lim.tokens = tokens
    allowed = math.min(allowed, math.floor(tokens))
  end
  if allowed > 0 then
    local c = redis.call('ZRANGE', lim.ready, 0, allowed - 1, 'WITHSCORES')
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
    local lim = limited[name]
    redis.call('ZREM', lim.ready, id)
    if lim.conc > 0 then
      redis.call('ZADD', lim.inflight, deadline, id)
    end
    taken[name] = (taken[name] or 0) + 1
  end
  redis.call('ZADD', KEYS[3], deadline, id)
  out[#out + 1] = id
  out[#out + 1] = name
end
for name, lim in pairs(limited) do
  if lim.rate > 0 then
    redis.call('HSET', lim.bucket, 'tokens', lim.tokens - (taken[name] or 0), 'ts', now)
    redis.call('PEXPIRE', lim.bucket, math.ceil(lim.burst / lim.rate * 1000) + 1000)
  end
end
return out
"""

_CLAIM = _CLAIM_CONTRACT + READY_SCORE_LUA + _CLAIM_BODY

# Pushes the deadline of leases (and concurrency slots) still present; XX: an id
# acked meanwhile stays gone.
_EXTEND = """
-- KEYS[1] leases, KEYS[2..] the inflight sets of the task types with limits
-- ARGV[1] lease (ms), ARGV[2..] pairs of (id, index in KEYS of its inflight set or 0)
-- Returns how many leases were extended.
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV, 2 do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
  local slot = tonumber(ARGV[i + 1])
  if slot > 0 then
    redis.call('ZADD', KEYS[slot], 'XX', deadline, ARGV[i])
  end
end
return n
"""

_EXPIRED = """
-- KEYS[1] leases; ARGV[1] limit
-- Returns ids whose Redis lease deadline has passed (by Redis's clock).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""


def head_starts(aging_seconds: float) -> list[float]:
    """The claim script's ARGV[4..7]: ``head_start_ms`` of priority rank 0..3."""
    return [head_start_ms(p, aging_seconds) for p in sorted(Priority, key=lambda p: p.rank)]


_WAKE_TOKENS = 8  # enough to rouse every idle drainer; bounded so the list never grows


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
        self.keys = keys = Keys(prefix)
        self.presence = Presence(client, keys)
        self.aging_seconds = aging_seconds
        self.limits = dict(limits or {})
        names = sorted(self.limits)
        self._claim_keys = [keys.ready, keys.delayed, keys.leases]
        self._claim_args: list[str | int | float] = [*head_starts(aging_seconds), len(names)]
        for name in names:
            lim = self.limits[name]
            self._claim_keys += [keys.typed_ready(name), keys.inflight(name), keys.type_rate(name)]
            self._claim_args += [name, lim.concurrency, lim.rate_per_second, max(lim.burst, 1)]
        self._extend_keys = [keys.leases, *(keys.inflight(name) for name in names)]
        self._inflight_slot = {name: i + 2 for i, name in enumerate(names)}  # 1-based index in _extend_keys
        self._claim = client.register_script(_CLAIM)
        self._extend = client.register_script(_EXTEND)
        self._expired = client.register_script(_EXPIRED)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "tasklane",
        aging_seconds: int = 300,
        limits: Mapping[str, TypeLimit] | None = None,
    ) -> Queue:
        return cls(connect(url, cluster=cluster), prefix=prefix, aging_seconds=aging_seconds, limits=limits)

    def _limited(self, name: str | None) -> str | None:
        """``name`` when that task type has limits (its ids live in sets of their own)."""
        return name if name is not None and name in self.limits else None

    def _ready_key(self, name: str | None) -> str:
        limited = self._limited(name)
        return self.keys.typed_ready(limited) if limited else self.keys.ready

    def _member(self, entry: QueueEntry) -> str:
        """An entry's member in ``delayed``: the claim script parses it back."""
        limited = self._limited(entry.name)
        rank = entry.priority.rank
        return f"{rank}:{entry.id}:{limited}" if limited else f"{rank}:{entry.id}"

    # --- producers ---------------------------------------------------------------------

    def push(self, entries: Iterable[QueueEntry], *, only_new: bool = False) -> None:
        """Add entries to ready (or to delayed, for ``delayed`` ones), waking idle
        drainers; one round trip.  ``only_new`` keeps existing scores (rebuilds must
        not reorder what is already there)."""
        with translate():
            pipe = self.client.pipeline(transaction=False)
            if self._add(pipe, entries, only_new=only_new):
                pipe.execute()

    def _add(self, pipe: Any, entries: Iterable[QueueEntry], *, only_new: bool = False) -> bool:
        """Queue the ZADDs for ``entries`` and their wake tokens on ``pipe``; False when
        there was nothing to add."""
        by_key: dict[str, dict[str, float]] = {}
        delayed: dict[str, float] = {}
        aging = self.aging_seconds
        for e in entries:
            if e.delayed:
                delayed[self._member(e)] = e.at_ms
            else:
                by_key.setdefault(self._ready_key(e.name), {})[e.id] = ready_score(e.at_ms, e.priority, aging)
        for key, mapping in by_key.items():
            pipe.zadd(key, mapping, nx=only_new)
        if delayed:
            pipe.zadd(self.keys.delayed, delayed, nx=only_new)
        # One token per ready id (up to all idle drainers); a delayed one gets one
        # token too, since a drainer may be idle until the earliest due time.
        tokens = sum(len(m) for m in by_key.values()) + (1 if delayed else 0)
        _wake(pipe, self.keys.wake, tokens)
        return bool(by_key or delayed)

    def remove(self, entries: Sequence[QueueEntry]) -> None:
        """Drop entries from ready and delayed (e.g. cancelled); best effort, one round trip."""
        if not entries:
            return
        by_key: dict[str, list[str]] = {}
        for e in entries:
            by_key.setdefault(self._ready_key(e.name), []).append(e.id)
        with translate():
            pipe = self.client.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.zrem(key, *ids)
            pipe.zrem(self.keys.delayed, *[self._member(e) for e in entries])
            pipe.execute()

    # --- consumers ---------------------------------------------------------------------

    def claim(self, count: int, lease_seconds: float) -> dict[str, str]:
        """Move up to ``count`` ready ids (due delayed ones included) into the lease set,
        within the per-type limits; returns ``{id: task type name or ""}`` in claim
        order, which is ready-score order: the order the batch should start in."""
        with translate():
            raw = self._claim(
                keys=self._claim_keys,
                args=[count, int(lease_seconds * 1000), max(count, 100), *self._claim_args],
            )
        flat = [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def wait_for_work(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a wake token; True when one came."""
        with translate():
            return self.client.blpop([self.keys.wake], timeout=max(timeout, 0.01)) is not None

    def wake(self) -> None:
        """Rouse an idle drainer (more work may be waiting)."""
        with translate():
            pipe = self.client.pipeline(transaction=False)
            _wake(pipe, self.keys.wake, 1)
            pipe.execute()

    def extend(self, ids: Sequence[str], lease_seconds: float, names: Mapping[str, str] | None = None) -> None:
        """Heartbeat: push lease deadlines (and the concurrency slots of limited types)."""
        if not ids:
            return
        args: list[str | int] = [int(lease_seconds * 1000)]
        slots = self._inflight_slot
        for tid in ids:
            args += [tid, slots.get((names or {}).get(tid, ""), 0)]
        with translate():
            self._extend(keys=self._extend_keys, args=args)

    def ack(
        self, ids: Sequence[str], requeue: Iterable[QueueEntry] = (), names: Mapping[str, str] | None = None
    ) -> None:
        """Release leases (and concurrency slots: ``names`` maps ids to task types) and
        add ``requeue`` (retries, webhook deliveries) in the same round trip."""
        slots: dict[str, list[str]] = {}
        for tid in ids:
            limited = self._limited((names or {}).get(tid))
            if limited and self.limits[limited].concurrency:
                slots.setdefault(limited, []).append(tid)
        with translate():
            pipe = self.client.pipeline(transaction=False)
            added = self._add(pipe, requeue)
            if ids:
                pipe.zrem(self.keys.leases, *ids)
            for name, members in slots.items():
                pipe.zrem(self.keys.inflight(name), *members)
            if slots:
                # A freed slot may unblock a throttled type: let an idle drainer look.
                _wake(pipe, self.keys.wake, 1)
            if ids or added:
                pipe.execute()

    # --- sweeper -----------------------------------------------------------------------

    def expired_leases(self, limit: int) -> list[str]:
        with translate():
            raw = self._expired(keys=[self.keys.leases], args=[limit])
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    def needs_rebuild(self) -> bool:
        """True when the sentinel is gone: Redis restarted empty or was flushed."""
        with translate():
            return not self.client.exists(self.keys.epoch)

    def mark_rebuilt(self) -> None:
        with translate():
            self.client.set(self.keys.epoch, "1")

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
            with translate():
                pipe = self.client.pipeline(transaction=False)
                pipe.zadd(self.keys.leases, mapping, nx=True)
                for name, members in slots.items():
                    pipe.zadd(self.keys.inflight(name), members, nx=True)
                pipe.execute()

    def depths(self) -> dict[str, int]:
        """Sizes of ready (limited types' sets included), delayed and leases."""
        snap = self.snapshot()
        return {k: int(snap[k] or 0) for k in ("ready", "delayed", "leased")}

    def ping(self) -> None:
        with translate():
            self.client.ping()

    # --- read-only views for metrics and health ------------------------------------------

    def mark_swept(self) -> None:
        """Record that a sweep just finished (health and metrics read it)."""
        with translate():
            self.client.set(self.keys.last_sweep, f"{time.time():.3f}")

    def last_sweep(self) -> float | None:
        """When a sweep last finished (epoch seconds), None if none is recorded; one
        round trip that also proves Redis answers."""
        with translate():
            return _epoch(self.client.get(self.keys.last_sweep))

    def snapshot(self) -> dict[str, float | None]:
        """Sizes of ready, delayed and leases plus the last sweep time; one round trip."""
        with translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(self.keys.ready)
            pipe.zcard(self.keys.delayed)
            pipe.zcard(self.keys.leases)
            pipe.get(self.keys.last_sweep)
            for name in self.limits:
                pipe.zcard(self.keys.typed_ready(name))
            ready, delayed, leased, raw, *typed = pipe.execute()
        ready = int(ready) + sum(int(n) for n in typed)
        return {"ready": ready, "delayed": int(delayed), "leased": int(leased), "last_sweep": _epoch(raw)}


def _wake(pipe: Any, key: str, tokens: int) -> None:
    """Queue ``tokens`` wake tokens (capped) on ``pipe``: the one way a token is pushed."""
    if tokens > 0:
        pipe.lpush(key, *(["1"] * min(tokens, _WAKE_TOKENS)))
        pipe.ltrim(key, 0, _WAKE_TOKENS - 1)


def _epoch(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        return None
