"""The queue as numbers for people: ``GET /api/v1/stats`` (the dashboard and the
CLI's ``stats``).

Stats are tenant-scoped and computed from PostgreSQL (the source of truth) in one
read-only snapshot, so the numbers add up.  "Today" starts at 00:00 UTC by the
database's clock; the per-minute series covers the last 60 minutes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from chalicelib.container import Container
from chalicelib.core.control import Pause
from chalicelib.core.model import Priority
from chalicelib.core.stats import StatsSnapshot
from chalicelib.services import tenants
from chalicelib.services.health import SweeperHealth, sweeper_status

COUNT_FIELDS = (
    "submitted",
    "completed",
    "failed",
    "cancelled",
    "expired",
    "queued",
    "pending",
    "processing",
    "dead_letters",
    "waiting",
)
MINUTE_FIELDS = ("submitted", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class GroupStats:
    """One group's numbers (a task name, a priority, or everything).

    ``counts`` has every name of ``COUNT_FIELDS``: submitted/completed/failed/cancelled
    today (expired: those of the cancelled that reached their expires_at unstarted),
    and queued/pending/processing/dead_letters now.  The averages cover tasks
    completed today (None when there were none)."""

    counts: dict[str, int]
    avg_run_seconds: float | None
    avg_wait_seconds: float | None
    oldest_queued_age_seconds: float | None

    @property
    def queue_size(self) -> int:
        return self.counts["queued"] + self.counts["pending"]


@dataclass(frozen=True)
class MinuteStats:
    minute: datetime
    counts: dict[str, int]  # every name of MINUTE_FIELDS


@dataclass(frozen=True)
class StatsNumbers:
    generated_at: datetime
    today_since: datetime
    totals: GroupStats
    by_priority: list[tuple[str, GroupStats]]  # every priority, highest first
    by_name: list[tuple[str, GroupStats]]  # by task name
    per_minute: list[MinuteStats]  # the last 60 minutes, oldest first


@dataclass(frozen=True)
class TenantStats:
    tenant: str
    numbers: StatsNumbers
    sweeper: SweeperHealth
    paused: list[Pause] = field(default_factory=list)  # the pauses in force for the tenant
    fair_share: dict[str, object] = field(default_factory=dict)  # services.tenants.usage


class _Acc:
    """Sums for one group while the snapshot is read."""

    def __init__(self) -> None:
        self.n: dict[str, int] = dict.fromkeys(COUNT_FIELDS, 0)
        self.run_seconds = 0.0
        self.wait_seconds = 0.0
        self.timed = 0
        self.oldest: datetime | None = None

    def done(self, now: datetime) -> GroupStats:
        return GroupStats(
            counts=dict(self.n),
            avg_run_seconds=round(self.run_seconds / self.timed, 4) if self.timed else None,
            avg_wait_seconds=round(self.wait_seconds / self.timed, 4) if self.timed else None,
            oldest_queued_age_seconds=(
                round(max((now - self.oldest).total_seconds(), 0.0), 3) if self.oldest is not None else None
            ),
        )


_LIVE = {
    "QUEUED": "queued",
    "PENDING": "pending",
    "PROCESSING": "processing",
    "FAILED": "dead_letters",
    "WAITING": "waiting",
}
_FINAL = {
    "COMPLETED": ("completed",),
    "FAILED": ("failed",),
    "CANCELLED": ("cancelled",),
    "EXPIRED": ("cancelled", "expired"),  # an expired task is a cancelled one too
}


def build_stats(raw: StatsSnapshot) -> StatsNumbers:
    """Roll ``Store.tenant_stats`` up by name, priority and minute (no I/O)."""
    now = raw.clock.now
    total = _Acc()
    by_name: dict[str, _Acc] = defaultdict(_Acc)
    by_priority: dict[str, _Acc] = {p.value: _Acc() for p in Priority}

    def groups(name: str, priority: str) -> list[_Acc]:
        return [total, by_name[name], by_priority.setdefault(priority, _Acc())]

    for live in raw.live:
        for acc in groups(live.name, live.priority):
            acc.n[_LIVE[live.status]] += live.n
            oldest = live.oldest_enqueued_at
            if live.status == "QUEUED" and oldest is not None:
                acc.oldest = min(acc.oldest or oldest, oldest)
    for sub in raw.submitted:
        for acc in groups(sub.name, sub.priority):
            acc.n["submitted"] += sub.n
    for fin in raw.finished:
        fields = _FINAL.get(fin.status, ())
        for acc in groups(fin.name, fin.priority) if fields else []:
            for counted in fields:
                acc.n[counted] += fin.n
            if fin.status == "COMPLETED":
                acc.run_seconds += fin.run_seconds
                acc.wait_seconds += fin.wait_seconds
                acc.timed += fin.timed

    start = raw.clock.hour_start
    minutes = [start + timedelta(minutes=i) for i in range(60)]
    series: dict[datetime, dict[str, int]] = {m: dict.fromkeys(MINUTE_FIELDS, 0) for m in minutes}
    for count in raw.per_minute:
        slot = series.get(count.minute)
        kind = "submitted" if count.kind == "SUBMITTED" else _FINAL.get(count.kind, ("",))[0]
        if slot is not None and kind:
            slot[kind] += count.n

    return StatsNumbers(
        generated_at=now,
        today_since=raw.clock.today,
        totals=total.done(now),
        by_priority=[(p, acc.done(now)) for p, acc in by_priority.items()],
        by_name=[(n, by_name[n].done(now)) for n in sorted(by_name)],
        per_minute=[MinuteStats(m, series[m]) for m in minutes],
    )


def tenant_stats(rt: Container, tenant: str) -> TenantStats:
    """``GET /api/v1/stats`` for ``tenant``: the numbers and the sweeper's freshness."""
    numbers = build_stats(rt.store.tenant_stats(tenant))
    return TenantStats(
        tenant, numbers, sweeper_status(rt), rt.store.paused_task_types(tenant), tenants.usage(rt, tenant)
    )
