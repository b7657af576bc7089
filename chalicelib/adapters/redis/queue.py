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

Partitions (``partitions`` > 1, ``TASKLANE_QUEUE_PARTITIONS``): the ready, delayed and
lease sets and the fair-queueing state exist once per partition, each partition under a
hash tag of its own (``keys.py``), and every script call touches one partition.  An
entry lives in its id's partition (``keys.partition_of``), except that limited task
types and tenants with a max_running quota live wholly in partition 0, where their
inflight sets, running sets and token buckets are: those limits hold globally, while
fair share between tenants holds within each partition.  A claim reads the
partitions' best scores in one pipeline and takes each partition's share of the
best ``count`` (``claim``, ``heads.py``).

Every Redis error leaves this module as ``QueueError`` (``client.translate``).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from chalicelib.adapters.redis.capped import move_to_partition_zero
from chalicelib.adapters.redis.client import HeldConnection, RedisLike, ScriptLike, as_text, connect, translate
from chalicelib.adapters.redis.heads import Heads, read_heads
from chalicelib.adapters.redis.keys import MAX_PARTITIONS, Keys, partition_of
from chalicelib.adapters.redis.presence import Presence
from chalicelib.adapters.redis.scripts import CLAIM, EXPIRED, EXTEND, PUSH_READY
from chalicelib.adapters.redis.scripts import READY_SCORE_LUA as READY_SCORE_LUA  # the aging test runs it
from chalicelib.adapters.redis.upkeep import QueueUpkeep
from chalicelib.adapters.redis.views import QueueViews
from chalicelib.config import TypeLimit
from chalicelib.core.errors import PartialPushError, QueueError
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
# The most entries one PUSH_READY call takes (Lua's unpack has a stack limit of ~8,000
# values); a bulk submit's push is one pipeline.
_SCRIPT_PUSH_MOST = 64
# How long a process trusts its list of tenants with a max_running quota (acks and
# heartbeats touch only their running sets).  A tenant capped since then has its slots
# freed by their lease deadline instead of the ack, for at most this long.
CAPPED_REFRESH_SECONDS = 5.0


class Queue(QueueUpkeep, QueueViews):
    """Ready, delayed and lease structures for task ids."""

    def __init__(
        self,
        client: RedisLike,
        *,
        prefix: str = "tasklane",
        aging_seconds: int = 300,
        limits: Mapping[str, TypeLimit] | None = None,
        partitions: int = 1,
    ) -> None:
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1 .. {MAX_PARTITIONS}, got {partitions}")
        self.client = client
        self.parts = [Keys(prefix, p) for p in range(partitions)]
        self.keys = keys = self.parts[0]  # wake, presence, sweep mark, rate limiter: partition 0
        self.presence = Presence(client, keys)
        self.aging_seconds = aging_seconds
        self.limits = dict(limits or {})
        self._head_starts = head_starts(aging_seconds)
        names = sorted(self.limits)
        # Per partition: the claim script's fixed KEYS and ARGV.  Only partition 0 gets the
        # limited types (their ready sets live there); a partition's tenant_max_running
        # hash is written in partition 0 only, so other partitions never cap a tenant.
        self._claim_plan: list[tuple[list[str], list[str | int | float]]] = []
        for part in self.parts:
            fixed = [
                part.delayed,
                part.leases,
                part.active_tenants,
                part.fair_finish,
                part.fair_clock,
                part.tenant_weight,
                part.tenant_max_running,
            ]
            args: list[str | int | float] = [*self._head_starts, len(names) if part.partition == 0 else 0]
            if part.partition == 0:
                for name in names:
                    lim = self.limits[name]
                    fixed += [keys.typed_ready(name), keys.inflight(name), keys.type_rate(name)]
                    args += [name, lim.concurrency, lim.rate_per_second, max(lim.burst, 1)]
            self._claim_plan.append((fixed, args))
        self._extend_keys = [keys.leases, *(keys.inflight(name) for name in names)]
        self._inflight_slot = {name: i + 2 for i, name in enumerate(names)}  # 1-based index in _extend_keys
        # Per partition, the tenants whose keys the claim script gets (it may touch no
        # other key); the script answers '?' with the current list when one is missing.
        # Each tuple is replaced whole, never mutated, so drainer threads sharing this
        # queue read a consistent one.
        self._tenants: list[tuple[str, ...]] = [() for _ in self.parts]
        self._capped: tuple[float, frozenset[str]] = (-CAPPED_REFRESH_SECONDS, frozenset())
        self._turn = 0  # rotates which partition wins a tie between equal heads
        self._claim = client.register_script(CLAIM)
        self._extend = client.register_script(EXTEND)
        self._expired = client.register_script(EXPIRED)
        self._push_ready = client.register_script(PUSH_READY)

    @property
    def partitions(self) -> int:
        return len(self.parts)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "tasklane",
        aging_seconds: int = 300,
        limits: Mapping[str, TypeLimit] | None = None,
        partitions: int = 1,
    ) -> Queue:
        client = connect(url, cluster=cluster)
        return cls(client, prefix=prefix, aging_seconds=aging_seconds, limits=limits, partitions=partitions)

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
        names = frozenset(as_text(r) for r in raw)
        self._capped = (now, names)
        return names

    def _home(self, task_id: str, name: str | None, tenant: str | None, capped: frozenset[str]) -> int:
        """The partition an id lives in: partition 0 for a limited type or a tenant with a
        max_running quota (their limits are single keys there), else its hash's."""
        n = len(self.parts)
        if n == 1 or (name is not None and name in self.limits) or tenant in capped:
            return 0
        return partition_of(task_id, n)

    def _places(self, task_id: str) -> tuple[int, ...]:
        """Every partition an id can be in: its hash's, and partition 0 (where it lives
        instead while its type is limited or its tenant capped, which can change)."""
        p = partition_of(task_id, len(self.parts))
        return (0,) if p == 0 else (0, p)

    def _ready_slot(self, entry: QueueEntry, partition: int = 0) -> tuple[str, str]:
        """(ready set, member) of a ready entry in ``partition``: the tenant's set, or its
        limited type's (always partition 0's)."""
        limited = self._limited(entry.name)
        if limited:
            return self.keys.typed_ready(limited), entry.id
        return self.parts[partition].tenant_ready(entry.tenant), _RANK_PREFIX[entry.priority] + entry.id

    def _member(self, entry: QueueEntry) -> str:
        """An entry's member in ``delayed``: the claim script parses it back (the tenant
        is length-prefixed, since a tenant name may hold any character)."""
        tenant = entry.tenant
        return f"{entry.priority.rank}:{entry.id}:{len(tenant.encode())}:{tenant}{self._limited(entry.name) or ''}"

    # --- producers ---------------------------------------------------------------------

    def push(
        self,
        entries: Iterable[QueueEntry],
        *,
        only_new: bool = False,
        partitions: Collection[int] | None = None,
        held: ScriptLike | None = None,
    ) -> None:
        """Add entries to ready (or to delayed, for ``delayed`` ones), waking idle
        drainers; one round trip (one pipeline, whatever partitions the entries go to).
        ``only_new`` keeps existing scores (rebuilds must not reorder what is already
        there); ``partitions`` keeps only the entries that can live in those (a rebuild
        of some partitions); ``held``, the ``PUSH_READY`` script on a connection of its
        own (pusher.py)."""
        if partitions is not None:
            entries = [e for e in entries if not set(self._places(e.id)).isdisjoint(partitions)]
        entries = list(entries)
        if (
            0 < len(entries) <= _SCRIPT_PUSH_MOST
            and len(self.parts) == 1
            and not only_new
            and self._pushed_ready(entries, held)
        ):
            return
        try:
            with translate():
                pipe = self.client.pipeline(transaction=False)
                if self._add(pipe, entries, only_new=only_new):
                    pipe.execute()
        except QueueError:
            if len(self.parts) == 1:
                raise
            self._push_each(entries, only_new=only_new)

    def push_script_only(self, entries: list[QueueEntry], held: ScriptLike) -> bool:
        """``push(entries, held=held)`` if that is one ``PUSH_READY`` call, else False (nothing sent)."""
        return 0 < len(entries) <= _SCRIPT_PUSH_MOST and len(self.parts) == 1 and self._pushed_ready(entries, held)

    def _pushed_ready(self, entries: list[QueueEntry], held: ScriptLike | None = None) -> bool:
        """A single submit's push, or a few coalesced ones (ready ids of one tenant, no
        limits, one partition), as one script call; False for anything else, which
        ``push`` then pipelines."""
        tenant = entries[0].tenant
        members: dict[str, float] = {}  # one member, and one token, per id, as ``_add`` makes them
        aging = self.aging_seconds
        for e in entries:
            if e.delayed or e.tenant != tenant or self._limited(e.name):
                return False
            members[_RANK_PREFIX[e.priority] + e.id] = ready_score(e.at_ms, e.priority, aging)
        args: list[str | float] = [tenant, _WAKE_TOKENS]
        for member, score in members.items():
            args += (score, member)
        part = self.parts[0]
        with translate():
            (held or self._push_ready)(keys=[part.tenant_ready(tenant), part.active_tenants, self.keys.wake], args=args)
        return True

    def _push_each(self, entries: list[QueueEntry], *, only_new: bool) -> None:
        """One pipeline per partition: a pipeline that spans an unreachable master fails
        whole, and the partitions on the other masters should still get their ids.
        Raises ``PartialPushError`` (how many did not go in, the first failure) after
        trying them all: what failed, the sweeper's reconciliation pushes again."""
        capped = self._capped_tenants()
        groups: dict[int, list[QueueEntry]] = {}
        for e in entries:
            groups.setdefault(self._home(e.id, e.name, e.tenant, capped), []).append(e)
        failed: QueueError | None = None
        unpushed = 0
        for group in groups.values():
            try:
                with translate():
                    pipe = self.client.pipeline(transaction=False)
                    if self._add(pipe, group, only_new=only_new):
                        pipe.execute()
            except QueueError as exc:
                failed = failed or exc
                unpushed += len(group)
        if failed is not None:
            raise PartialPushError(unpushed, len(entries), failed) from failed

    def _add(self, pipe: Any, entries: Iterable[QueueEntry], *, only_new: bool = False) -> bool:
        """Queue the ZADDs for ``entries`` and their wake tokens on ``pipe``; False when
        there was nothing to add."""
        by_key: dict[str, dict[str, float]] = {}
        delayed: dict[int, dict[str, float]] = {}
        tenant_sets: dict[tuple[int, str], dict[str, float]] = {}  # the hot path: one lookup per entry
        aging, limits, parts = self.aging_seconds, self.limits, self.parts
        split = len(parts) > 1
        capped = self._capped_tenants() if split else frozenset()
        for e in entries:
            p = self._home(e.id, e.name, e.tenant, capped) if split else 0
            if e.delayed:
                delayed.setdefault(p, {})[self._member(e)] = e.at_ms
            elif e.name is not None and e.name in limits:
                by_key.setdefault(self.keys.typed_ready(e.name), {})[e.id] = ready_score(e.at_ms, e.priority, aging)
            else:
                mapping = tenant_sets.get((p, e.tenant))
                if mapping is None:
                    key = parts[p].tenant_ready(e.tenant)
                    mapping = tenant_sets[(p, e.tenant)] = by_key.setdefault(key, {})
                mapping[_RANK_PREFIX[e.priority] + e.id] = ready_score(e.at_ms, e.priority, aging)
        for key, mapping in by_key.items():
            pipe.zadd(key, mapping, nx=only_new)
        active: dict[int, list[str]] = {}
        for p, tenant in tenant_sets:
            active.setdefault(p, []).append(tenant)
        for p, tenants in active.items():
            # After the ZADDs: a claim that empties a set in between drops the tenant,
            # and this SADD brings it back; the other order could strand ready ids.
            pipe.sadd(parts[p].active_tenants, *tenants)
        for p, members in delayed.items():
            pipe.zadd(parts[p].delayed, members, nx=only_new)
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
            member = self._member(e)
            for p in self._places(e.id):
                key, ready_member = self._ready_slot(e, p)
                by_key.setdefault(key, []).append(ready_member)
                by_key.setdefault(self.parts[p].delayed, []).append(member)
        with translate():
            pipe = self.client.pipeline(transaction=False)
            for key, members in by_key.items():
                pipe.zrem(key, *dict.fromkeys(members))
            pipe.execute()

    # --- consumers ---------------------------------------------------------------------

    def hold_connection(self) -> HeldConnection | None:
        """A connection for one drain loop's ``wait_for_work`` and ``claim`` (``held``),
        off the client's pool (``client.HeldConnection``); None for a cluster client."""
        return HeldConnection.of(self.client)

    def claim(self, count: int, lease_seconds: float, *, held: HeldConnection | None = None) -> dict[str, str]:
        """Move up to ``count`` ready ids (due delayed ones included) into the lease set,
        within the per-type limits and tenant quotas, sharing slots fairly between
        tenants; returns ``{id: task type name or ""}`` in claim order: the order the
        batch should start in.

        With partitions: one pipeline reads the best scores of every partition; the
        best ``count`` of them say each partition's share of the batch, and each
        partition's claim script takes that many (best partition first).  Room a limit
        or quota left is filled from the partitions, best head first.  So a batch is
        the best ``count`` ids of all partitions, up to fair share within each and the
        limits (docs/scaling.md, "Queue partitions").  ``held``: the claim scripts run
        on that connection (``hold_connection``)."""
        n = len(self.parts)
        if n == 1:
            return self._claim_from(0, count, lease_seconds, held)
        out: dict[str, str] = {}
        try:
            heads = self._read_heads(count)
        except QueueError:
            # A master is unreachable and the read's pipeline failed whole: try every
            # partition on its own (in turn), so those on the other masters still drain.
            self._turn = turn = (self._turn + 1) % n
            return self._claim_in_turn([(turn + i) % n for i in range(n)], count, lease_seconds, out, held)
        order = [p for best, _, p in sorted(heads.ranked) if best < math.inf]
        share = Counter(p for _, p in heapq.nsmallest(count, ((s, p) for p in order for s in heads.scores[p])))
        rest = []
        for p in order:
            if share[p]:
                before = len(out)
                self._claim_in_turn([p], share[p], lease_seconds, out, held)
                if len(out) - before < share[p]:
                    continue  # a limit, a quota or a failure held some back: no more here
            if heads.more[p] or len(heads.scores[p]) > share[p]:
                rest.append(p)
        if len(out) < count and rest:
            self._claim_in_turn(rest, count, lease_seconds, out, held)
        return out

    def _claim_in_turn(
        self, order: list[int], count: int, lease_seconds: float, out: dict[str, str], held: HeldConnection | None
    ) -> dict[str, str]:
        """Claim into ``out`` from the partitions in ``order`` until it holds ``count``
        ids more than it did; a partition that fails is skipped, and the first failure
        is raised only when nothing at all was claimed."""
        target = len(out) + count
        failed: QueueError | None = None
        for p in order:
            try:
                out.update(self._claim_from(p, target - len(out), lease_seconds, held))
            except QueueError as exc:
                failed = failed or exc
            if len(out) >= target:
                break
        if failed is not None and not out:
            raise failed
        return out

    def _read_heads(self, count: int) -> Heads:
        """``heads.read_heads``; read again at once when a partition has a tenant this
        process did not know yet.  A partition's share of the best ``count`` is binomial
        (an id's partition is a hash) with mean ``count``/n: it is read to the mean plus
        four standard deviations.  Partition 0 is read ``count`` deep when it holds
        limited types or capped tenants, whose shares no hash evens out."""
        n = len(self.parts)
        mean = count / n
        depth = min(count, math.ceil(mean + 4 * math.sqrt(mean)) + 2)
        uneven = bool(self.limits) or bool(self._capped_tenants())
        depths = [count if uneven else depth] + [depth] * (n - 1)
        for _ in range(2):
            known = list(self._tenants)
            self._turn = turn = (self._turn + 1) % n
            with translate():
                heads = read_heads(self.client, self.parts, known, sorted(self.limits), self._head_starts, turn, depths)
            if not heads.unknown:
                return heads
            for p, tenants in heads.unknown.items():
                self._tenants[p] = tuple(sorted(set(known[p]) | tenants))
        # Tenants keep arriving: those partitions first, each of their claims learns them.
        heads.ranked = [(-math.inf if p in heads.unknown else b, t, p) for b, t, p in heads.ranked]
        for p in heads.unknown:
            heads.more[p] = True
        return heads

    def _claim_from(
        self, partition: int, count: int, lease_seconds: float, held: HeldConnection | None = None
    ) -> dict[str, str]:
        """The claim script on one partition's keys."""
        part = self.parts[partition]
        claim = self._claim if held is None else held.script(CLAIM)
        fixed, fixed_args = self._claim_plan[partition]
        for _ in range(3):
            tenants = self._tenants[partition]
            keys = list(fixed)
            for tenant in tenants:
                keys += [part.tenant_ready(tenant), part.tenant_running(tenant)]
            args = [count, int(lease_seconds * 1000), max(count, 100), *fixed_args, len(tenants), *tenants]
            with translate():
                raw = claim(keys=keys, args=args)
            flat = [as_text(r) for r in raw]
            if flat[:1] != ["?"]:
                return dict(zip(flat[::2], flat[1::2], strict=True))
            self._tenants[partition] = tuple(sorted(set(flat[1:])))
        return {}  # the active tenants kept changing under us: the next call tries again

    def wait_for_work(self, timeout: float, *, held: HeldConnection | None = None) -> bool | None:
        """Block up to ``timeout`` seconds for a wake token; True when one came.  On
        ``held`` with one partition the wait is armed instead (``HeldConnection.arm``):
        Redis waits ahead of the next command on ``held``, the loop's ``claim``; None."""
        timeout = max(timeout, 0.01)
        with translate():
            if held is not None and len(self.parts) == 1:
                held.arm("BLPOP", self.keys.wake, timeout)
                return None
            if held is not None:
                return held.command("BLPOP", self.keys.wake, timeout) is not None
            return self.client.blpop([self.keys.wake], timeout=timeout) is not None

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
        and the running slots of tenants with a quota; ``tenants`` maps ids to tenants);
        one script call per partition the ids live in."""
        if not ids:
            return
        names, tenants = names or {}, tenants or {}
        capped = self._capped_tenants() if tenants or len(self.parts) > 1 else frozenset()
        by_part: dict[int, list[str]] = {}
        for tid in ids:
            by_part.setdefault(self._home(tid, names.get(tid), tenants.get(tid), capped), []).append(tid)
        lease_ms = int(lease_seconds * 1000)
        for partition, members in sorted(by_part.items()):
            if partition:
                keys = [self.parts[partition].leases]
                args: list[str | int] = [lease_ms]
                for tid in members:
                    args += [tid, 0, 0]
                with translate():
                    self._extend(keys=keys, args=args)
                continue
            keys = list(self._extend_keys)
            running: dict[str, int] = {}
            for tenant in sorted({tenants[t] for t in members if t in tenants} & capped):
                keys.append(self.keys.tenant_running(tenant))
                running[tenant] = len(keys)  # 1-based index in KEYS
            args = [lease_ms]
            slots = self._inflight_slot
            for tid in members:
                args += [tid, slots.get(names.get(tid, ""), 0), running.get(tenants.get(tid, ""), 0)]
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
        leases: dict[int, list[str]] = {}
        capped = self._capped_tenants() if tenants else frozenset()
        for tid in ids:
            limited = self._limited((names or {}).get(tid))
            if limited and self.limits[limited].concurrency:
                slots.setdefault(limited, []).append(tid)
            tenant = (tenants or {}).get(tid)
            if tenant in capped:
                running.setdefault(tenant, []).append(tid)
            for p in self._places(tid):
                leases.setdefault(p, []).append(tid)
        with translate():
            pipe = self.client.pipeline(transaction=False)
            # Leases first: a claim drops a limited type's ready id whose lease is live (CLAIM).
            for p, members in leases.items():
                pipe.zrem(self.parts[p].leases, *members)
            for name, members in slots.items():
                pipe.zrem(self.keys.inflight(name), *members)
            for tenant, members in running.items():  # no wake token: the acking drainer claims again
                pipe.zrem(self.keys.tenant_running(tenant), *members)
            added = self._add(pipe, requeue)
            if slots:
                # A freed slot may unblock a throttled type: let an idle drainer look.
                _wake(pipe, self.keys.wake, 1)
            if ids or added:
                pipe.execute()

    # --- sweeper (the reads and sentinel marks: upkeep.py) -------------------------------

    def lease_all(
        self, leases: Iterable[tuple[str, float, str, str]], *, partitions: Collection[int] | None = None
    ) -> None:
        """Restore lease entries ``(id, deadline_ms, task type, tenant)`` after a rebuild,
        with the concurrency slots of limited types and the tenants' running slots (all
        in partition 0); ``partitions`` keeps only the ids that can live in those."""
        mapping: dict[int, dict[str, float]] = {}
        slots: dict[str, dict[str, float]] = {}
        split = len(self.parts) > 1
        capped = self._capped_tenants() if split else frozenset()
        for tid, deadline, name, tenant in leases:
            if partitions is not None and set(self._places(tid)).isdisjoint(partitions):
                continue
            p = self._home(tid, name, tenant, capped) if split else 0
            mapping.setdefault(p, {})[tid] = deadline
            limited = self._limited(name)
            if limited:
                slots.setdefault(self.keys.inflight(limited), {})[tid] = deadline
            slots.setdefault(self.keys.tenant_running(tenant), {})[tid] = deadline
        if mapping:
            with translate():
                pipe = self.client.pipeline(transaction=False)
                for p, members in mapping.items():
                    pipe.zadd(self.parts[p].leases, members, nx=True)
                for key, members in slots.items():
                    pipe.zadd(key, members, nx=True)
                pipe.execute()

    def set_tenant_limits(self, weights: Mapping[str, float], max_running: Mapping[str, int]) -> None:
        """Replace the claim script's copy of the tenants' weights (every partition's:
        fair share holds per partition) and running quotas (partition 0's only: capped
        tenants live there); PostgreSQL's ``tenant_limits`` is the source, the sweeper
        calls this).  Capped tenants' ready ids in other partitions move to partition 0
        (``capped.py``)."""
        # New values first, then the fields no longer configured: a claim in between
        # sees old or new limits, never none (no MULTI: a cluster pipeline has none).
        targets: list[tuple[str, Mapping[str, float] | Mapping[str, int]]] = [
            (part.tenant_weight, weights) for part in self.parts
        ]
        targets.append((self.keys.tenant_max_running, max_running))
        with translate():
            pipe = self.client.pipeline(transaction=False)
            for key, _ in targets:
                pipe.hkeys(key)
            olds = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            for (key, new), old in zip(targets, olds, strict=True):
                if new:
                    pipe.hset(key, mapping=dict(new))
                stale = {as_text(f) for f in old} - set(new)
                if stale:
                    pipe.hdel(key, *stale)
            pipe.execute()
            self._capped = (time.monotonic(), frozenset(max_running))
            move_to_partition_zero(self.client, self.parts, max_running)


def _wake(pipe: Any, key: str, tokens: int) -> None:
    """Queue ``tokens`` wake tokens (capped) on ``pipe``: the one way a token is pushed."""
    if tokens > 0:
        pipe.lpush(key, *(["1"] * min(tokens, _WAKE_TOKENS)))
        pipe.ltrim(key, 0, _WAKE_TOKENS - 1)
