"""Redis adapter: the fast queue.  Redis holds only ids and scores, so the sweeper
can always rebuild it from PostgreSQL.  Key names and lifetimes: ``keys.py``.

- each tenant has a ready set of ``"<rank>:<id>"`` scored by ``core.model.ready_score``
  (priority order with aging); the claim script shares slots fairly between tenants
  (``scripts.py``); task types with limits have ready sets of their own;
- ``delayed`` holds ``"<rank>:<id>:<n>:<tenant><task type if limited>"`` scored by due
  time (ms): rank and tenant ride in the member so a due id moves to its tenant's
  ready set with its priority head start;
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
from chalicelib.adapters.redis.scripts import CLAIM, EXPIRED, EXTEND
from chalicelib.adapters.redis.scripts import READY_SCORE_LUA as READY_SCORE_LUA  # the aging test runs it
from chalicelib.config import TypeLimit
from chalicelib.core.model import Priority, QueueEntry, head_start_ms, ready_score

# The scripts live in ``scripts.py``; these names are what the tests hold to the contract.
_CLAIM = CLAIM
_EXTEND = EXTEND
_EXPIRED = EXPIRED


def head_starts(aging_seconds: float) -> list[float]:
    """The claim script's ARGV[4..7]: ``head_start_ms`` of priority rank 0..3."""
    return [head_start_ms(p, aging_seconds) for p in sorted(Priority, key=lambda p: p.rank)]


_RANK_PREFIX = {p: f"{p.rank}:" for p in Priority}  # a tenant ready set's member: "<rank>:<id>"
_WAKE_TOKENS = 8  # enough to rouse every idle drainer; bounded so the list never grows
# How long a process trusts its list of tenants with a max_running quota (acks and
# heartbeats touch only their running sets).  A tenant capped since then has its slots
# freed by their lease deadline instead of the ack, for at most this long.
CAPPED_REFRESH_SECONDS = 5.0


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
        self._claim_keys = [
            keys.delayed,
            keys.leases,
            keys.active_tenants,
            keys.fair_finish,
            keys.fair_clock,
            keys.tenant_weight,
            keys.tenant_max_running,
        ]
        self._claim_args: list[str | int | float] = [*head_starts(aging_seconds), len(names)]
        for name in names:
            lim = self.limits[name]
            self._claim_keys += [keys.typed_ready(name), keys.inflight(name), keys.type_rate(name)]
            self._claim_args += [name, lim.concurrency, lim.rate_per_second, max(lim.burst, 1)]
        self._extend_keys = [keys.leases, *(keys.inflight(name) for name in names)]
        self._inflight_slot = {name: i + 2 for i, name in enumerate(names)}  # 1-based index in _extend_keys
        # The tenants whose keys the claim script gets (it may touch no other key); the
        # script answers '?' with the current list when one is missing.  Replaced whole,
        # never mutated, so drainer threads sharing this queue read a consistent tuple.
        self._tenants: tuple[str, ...] = ()
        self._capped: tuple[float, frozenset[str]] = (-CAPPED_REFRESH_SECONDS, frozenset())
        self._claim = client.register_script(CLAIM)
        self._extend = client.register_script(EXTEND)
        self._expired = client.register_script(EXPIRED)

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

    def _capped_tenants(self) -> frozenset[str]:
        """Tenants with a max_running quota, re-read at most every ``CAPPED_REFRESH_SECONDS``."""
        at, names = self._capped
        now = time.monotonic()
        if now - at < CAPPED_REFRESH_SECONDS:
            return names
        with translate():
            pipe = self.client.pipeline(transaction=False)  # a cluster client has pipelines, not HKEYS
            pipe.hkeys(self.keys.tenant_max_running)
            (raw,) = pipe.execute()
        names = frozenset(r.decode() if isinstance(r, bytes) else str(r) for r in raw)
        self._capped = (now, names)
        return names

    def _ready_slot(self, entry: QueueEntry) -> tuple[str, str]:
        """(ready set, member) of a ready entry: the tenant's set, or its limited type's."""
        limited = self._limited(entry.name)
        if limited:
            return self.keys.typed_ready(limited), entry.id
        return self.keys.tenant_ready(entry.tenant), _RANK_PREFIX[entry.priority] + entry.id

    def _member(self, entry: QueueEntry) -> str:
        """An entry's member in ``delayed``: the claim script parses it back (the tenant
        is length-prefixed, since a tenant name may hold any character)."""
        tenant = entry.tenant
        return f"{entry.priority.rank}:{entry.id}:{len(tenant.encode())}:{tenant}{self._limited(entry.name) or ''}"

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
        tenant_sets: dict[str, dict[str, float]] = {}  # the hot path: one lookup per entry
        aging, limits = self.aging_seconds, self.limits
        for e in entries:
            if e.delayed:
                delayed[self._member(e)] = e.at_ms
            elif e.name is not None and e.name in limits:
                by_key.setdefault(self.keys.typed_ready(e.name), {})[e.id] = ready_score(e.at_ms, e.priority, aging)
            else:
                mapping = tenant_sets.get(e.tenant)
                if mapping is None:
                    mapping = tenant_sets[e.tenant] = by_key.setdefault(self.keys.tenant_ready(e.tenant), {})
                mapping[_RANK_PREFIX[e.priority] + e.id] = ready_score(e.at_ms, e.priority, aging)
        for key, mapping in by_key.items():
            pipe.zadd(key, mapping, nx=only_new)
        if tenant_sets:
            tenants = list(tenant_sets)
            # After the ZADDs: a claim that empties a set in between drops the tenant,
            # and this SADD brings it back; the other order could strand ready ids.
            pipe.sadd(self.keys.active_tenants, *tenants)
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
            key, member = self._ready_slot(e)
            by_key.setdefault(key, []).append(member)
        with translate():
            pipe = self.client.pipeline(transaction=False)
            for key, members in by_key.items():
                pipe.zrem(key, *members)
            pipe.zrem(self.keys.delayed, *[self._member(e) for e in entries])
            pipe.execute()

    # --- consumers ---------------------------------------------------------------------

    def claim(self, count: int, lease_seconds: float) -> dict[str, str]:
        """Move up to ``count`` ready ids (due delayed ones included) into the lease set,
        within the per-type limits and tenant quotas, sharing slots fairly between
        tenants; returns ``{id: task type name or ""}`` in claim order: the order the
        batch should start in."""
        for _ in range(3):
            tenants = self._tenants
            keys = list(self._claim_keys)
            for tenant in tenants:
                keys += [self.keys.tenant_ready(tenant), self.keys.tenant_running(tenant)]
            args = [count, int(lease_seconds * 1000), max(count, 100), *self._claim_args, len(tenants), *tenants]
            with translate():
                raw = self._claim(keys=keys, args=args)
            flat = [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
            if flat[:1] != ["?"]:
                return dict(zip(flat[::2], flat[1::2], strict=True))
            self._tenants = tuple(sorted(set(flat[1:])))
        return {}  # the active tenants kept changing under us: the next call tries again

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

    def extend(
        self,
        ids: Sequence[str],
        lease_seconds: float,
        names: Mapping[str, str] | None = None,
        tenants: Mapping[str, str] | None = None,
    ) -> None:
        """Heartbeat: push lease deadlines (and the concurrency slots of limited types
        and the running slots of tenants with a quota; ``tenants`` maps ids to tenants)."""
        if not ids:
            return
        keys = list(self._extend_keys)
        running: dict[str, int] = {}
        capped = self._capped_tenants() if tenants else frozenset()
        for tenant in sorted(set((tenants or {}).values()) & capped):
            keys.append(self.keys.tenant_running(tenant))
            running[tenant] = len(keys)  # 1-based index in KEYS
        args: list[str | int] = [int(lease_seconds * 1000)]
        slots = self._inflight_slot
        for tid in ids:
            args += [tid, slots.get((names or {}).get(tid, ""), 0), running.get((tenants or {}).get(tid, ""), 0)]
        with translate():
            self._extend(keys=keys, args=args)

    def ack(
        self,
        ids: Sequence[str],
        requeue: Iterable[QueueEntry] = (),
        names: Mapping[str, str] | None = None,
        tenants: Mapping[str, str] | None = None,
    ) -> None:
        """Release leases (and slots: ``names`` maps ids to task types, ``tenants`` to
        tenants) and add ``requeue`` (retries, webhook deliveries) in the same round trip."""
        slots: dict[str, list[str]] = {}
        running: dict[str, list[str]] = {}
        capped = self._capped_tenants() if tenants else frozenset()
        for tid in ids:
            limited = self._limited((names or {}).get(tid))
            if limited and self.limits[limited].concurrency:
                slots.setdefault(limited, []).append(tid)
            tenant = (tenants or {}).get(tid)
            if tenant in capped:
                running.setdefault(tenant, []).append(tid)
        with translate():
            pipe = self.client.pipeline(transaction=False)
            added = self._add(pipe, requeue)
            if ids:
                pipe.zrem(self.keys.leases, *ids)
            for name, members in slots.items():
                pipe.zrem(self.keys.inflight(name), *members)
            for tenant, members in running.items():
                # No wake token for these: the acking drainer claims again itself right away.
                pipe.zrem(self.keys.tenant_running(tenant), *members)
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

    def lease_all(self, leases: Iterable[tuple[str, float, str, str]]) -> None:
        """Restore lease entries ``(id, deadline_ms, task type, tenant)`` after a rebuild,
        with the concurrency slots of limited types and the tenants' running slots."""
        mapping: dict[str, float] = {}
        slots: dict[str, dict[str, float]] = {}
        for tid, deadline, name, tenant in leases:
            mapping[tid] = deadline
            limited = self._limited(name)
            if limited:
                slots.setdefault(self.keys.inflight(limited), {})[tid] = deadline
            slots.setdefault(self.keys.tenant_running(tenant), {})[tid] = deadline
        if mapping:
            with translate():
                pipe = self.client.pipeline(transaction=False)
                pipe.zadd(self.keys.leases, mapping, nx=True)
                for key, members in slots.items():
                    pipe.zadd(key, members, nx=True)
                pipe.execute()

    def set_tenant_limits(self, weights: Mapping[str, float], max_running: Mapping[str, int]) -> None:
        """Replace the claim script's copy of the tenants' weights and running quotas
        (PostgreSQL's ``tenant_limits`` is the source; the sweeper calls this)."""
        # New values first, then the fields no longer configured: a claim in between
        # sees old or new limits, never none (no MULTI: a cluster pipeline has none).
        with translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.hkeys(self.keys.tenant_weight)
            pipe.hkeys(self.keys.tenant_max_running)
            old_weights, old_running = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            for key, new, old in (
                (self.keys.tenant_weight, weights, old_weights),
                (self.keys.tenant_max_running, max_running, old_running),
            ):
                if new:
                    pipe.hset(key, mapping=dict(new))
                stale = {f.decode() if isinstance(f, bytes) else str(f) for f in old} - set(new)
                if stale:
                    pipe.hdel(key, *stale)
            pipe.execute()

    def queued_count(self, tenant: str) -> int:
        """The tenant's ready tasks (types without limits): what its max_queued bounds."""
        with translate():
            return int(self.client.zcard(self.keys.tenant_ready(tenant)))

    def count_refusal(self, tenant: str, quota: str, tasks: int) -> None:
        with translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(self.keys.quota_refused, f"{quota}:{tenant}", tasks)
            pipe.execute()

    def refusals(self) -> dict[tuple[str, str], int]:
        """``{(quota, tenant): tasks refused}`` since Redis last lost its data."""
        with translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.quota_refused)
            (raw,) = pipe.execute()
        out: dict[tuple[str, str], int] = {}
        for field, n in raw.items():
            quota, _, tenant = (field.decode() if isinstance(field, bytes) else str(field)).partition(":")
            out[(quota, tenant)] = int(n)
        return out

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

    def tenant_depths(self, tenants: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
        """``{tenant: (ready, running)}`` for ``tenants`` (None: the active ones); running
        is counted only for tenants with a max_running quota (0 otherwise)."""
        with translate():
            if tenants is None:
                pipe = self.client.pipeline(transaction=False)  # a cluster client has pipelines, not SMEMBERS
                pipe.smembers(self.keys.active_tenants)
                (raw,) = pipe.execute()
                tenants = {r.decode() if isinstance(r, bytes) else str(r) for r in raw}
            names = sorted(set(tenants))
            if not names:
                return {}
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.zcard(self.keys.tenant_ready(name))
                pipe.zcount(self.keys.tenant_running(name), f"({int(time.time() * 1000)}", "+inf")
            counts = pipe.execute()
        return {name: (int(counts[2 * i]), int(counts[2 * i + 1])) for i, name in enumerate(names)}

    def snapshot(self) -> dict[str, float | None]:
        """Sizes of ready, delayed and leases plus the last sweep time."""
        tenants = self.tenant_depths()
        with translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(self.keys.delayed)
            pipe.zcard(self.keys.leases)
            pipe.get(self.keys.last_sweep)
            for name in self.limits:
                pipe.zcard(self.keys.typed_ready(name))
            delayed, leased, raw, *typed = pipe.execute()
        ready = sum(r for r, _ in tenants.values()) + sum(int(n) for n in typed)
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
