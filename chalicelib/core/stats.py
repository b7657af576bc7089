"""The queue's numbers as the store reads them: metric totals, queue gauges and a
tenant's stats snapshot.  One frozen record per row kind, each built by its
``from_row`` from the named query (``adapters/postgres/queries.sql``) it names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MetricTotal:
    """A counter or histogram bucket by task name (query ``metric_totals``): the trigger
    of migration 0003 keeps them; ``le`` is +Inf for plain counters, ``total`` the sum
    of a histogram's observations."""

    name: str
    metric: str
    le: float
    n: int
    total: float | None

    @classmethod
    def from_row(cls, row: Row) -> MetricTotal:
        return cls(row["name"], row["metric"], float(row["le"]), int(row["n"]), row["total"])


@dataclass(frozen=True, slots=True)
class QueueGauge:
    """Live tasks of one status and priority (query ``queue_gauges``); the FAILED row
    and the BATCHES_OPEN row (open batches) have no priority, and only QUEUED rows
    carry the oldest task's age."""

    status: str
    priority: str | None
    n: int
    oldest_age_seconds: float | None

    @classmethod
    def from_row(cls, row: Row) -> QueueGauge:
        return cls(row["status"], row["priority"], int(row["n"]), row["oldest_age_seconds"])


@dataclass(frozen=True, slots=True)
class StatsClock:
    """The database's clock and the windows the stats cover (query ``stats_clock``)."""

    now: datetime
    today: datetime  # 00:00 UTC
    hour_start: datetime  # the first minute of the per-minute series

    @classmethod
    def from_row(cls, row: Row) -> StatsClock:
        return cls(row["now"], row["today"], row["hour_start"])


@dataclass(frozen=True, slots=True)
class LiveCount:
    """A tenant's tasks in one live state (or FAILED) by name and priority (query
    ``stats_live``); ``oldest_enqueued_at`` only for QUEUED."""

    name: str
    priority: str
    status: str
    n: int
    oldest_enqueued_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> LiveCount:
        return cls(row["name"], row["priority"], row["status"], int(row["n"]), row["oldest_enqueued_at"])


@dataclass(frozen=True, slots=True)
class SubmittedCount:
    """Tasks submitted since the start of the day (query ``stats_submitted_since``)."""

    name: str
    priority: str
    n: int

    @classmethod
    def from_row(cls, row: Row) -> SubmittedCount:
        return cls(row["name"], row["priority"], int(row["n"]))


@dataclass(frozen=True, slots=True)
class FinishedCount:
    """Final tasks by outcome since the start of the day (query ``stats_finished_since``):
    sums rather than averages so callers can roll them up; ``timed`` counts the tasks
    that have a start time."""

    name: str
    priority: str
    status: str
    n: int
    timed: int
    run_seconds: float
    wait_seconds: float

    @classmethod
    def from_row(cls, row: Row) -> FinishedCount:
        return cls(
            row["name"],
            row["priority"],
            row["status"],
            int(row["n"]),
            int(row["timed"]),
            float(row["run_seconds"]),
            float(row["wait_seconds"]),
        )


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Tasks of one kind (``SUBMITTED`` or a final status) in one minute (query
    ``stats_per_minute``)."""

    minute: datetime
    kind: str
    n: int

    @classmethod
    def from_row(cls, row: Row) -> MinuteCount:
        return cls(row["minute"], row["kind"], int(row["n"]))


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A tenant's numbers read in one snapshot (``Store.tenant_stats``), so they add up."""

    clock: StatsClock
    live: list[LiveCount]
    submitted: list[SubmittedCount]
    finished: list[FinishedCount]
    per_minute: list[MinuteCount]
