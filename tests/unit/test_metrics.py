"""Metrics exposition and stats shaping, without I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chalicelib.api import presenters
from chalicelib.core.control import PausedGauge
from chalicelib.core.errors import QueueError
from chalicelib.core.stats import (
    FinishedCount,
    LiveCount,
    MetricTotal,
    MinuteCount,
    QueueGauge,
    StatsClock,
    StatsSnapshot,
    SubmittedCount,
)
from chalicelib.observability import metrics
from chalicelib.services import stats

ROOT = Path(__file__).resolve().parents[2]


class FakeStore:
    """The rows as the queries return them, turned into records as the store does."""

    def __init__(self, totals: list[dict[str, Any]], gauges: list[dict[str, Any]]) -> None:
        self.totals, self.gauges = totals, gauges

    def metric_totals(self) -> list[MetricTotal]:
        return [MetricTotal.from_row(r) for r in self.totals]

    def queue_gauges(self) -> list[QueueGauge]:
        return [QueueGauge.from_row(r) for r in self.gauges]

    def paused_gauges(self) -> list[PausedGauge]:
        return []


class FakeQueue:
    def __init__(self, snap: dict[str, float | None] | None) -> None:
        self.snap = snap

    def snapshot(self) -> dict[str, float | None]:
        if self.snap is None:
            raise QueueError("Redis is unreachable or failed: connection refused")
        return self.snap

    def tenant_depths(self, tenants: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
        return {"acme": (3, 0), "capped": (10, 2)}

    def refusals(self) -> dict[tuple[str, str], int]:
        return {("max_queued", "acme"): 7}


INF = float("inf")
TOTALS = [
    {"name": "noop", "metric": "submitted", "le": INF, "n": 7, "total": 0.0},
    {"name": "noop", "metric": "completed", "le": INF, "n": 5, "total": 0.0},
    {"name": "fail", "metric": "dead_lettered", "le": INF, "n": 2, "total": 0.0},
    {"name": "noop", "metric": "run", "le": 0.005, "n": 3, "total": 0.006},
    {"name": "noop", "metric": "run", "le": 1.0, "n": 1, "total": 0.7},
    {"name": "noop", "metric": "run", "le": INF, "n": 1, "total": 5000.0},
]
GAUGES = [
    {"status": "QUEUED", "priority": "high", "n": 4, "oldest_age_seconds": 12.5},
    {"status": "PENDING", "priority": "low", "n": 2, "oldest_age_seconds": None},
    {"status": "PROCESSING", "priority": "normal", "n": 1, "oldest_age_seconds": None},
    {"status": "FAILED", "priority": None, "n": 9, "oldest_age_seconds": None},
]


def parse(text: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def test_bucket_bounds_equal_the_triggers() -> None:
    """Every migration that (re)defines the metrics trigger's function uses the same
    bounds (0019 only attaches the trigger to the partitioned task_events)."""
    defining = [
        p
        for p in sorted((ROOT / "infra/migrations").glob("*.sql"))
        if "FUNCTION tasklane_count_task_events() RETURNS" in p.read_text()
    ]
    assert defining, "no migration defines the metrics trigger"
    for path in defining:
        # Every array of the file: a fast path (0025, 0026) has its own copy.
        found = re.findall(r"'\{([0-9.,]+),Infinity\}'::float8\[\]", path.read_text())
        assert found, f"the trigger's bucket array in {path.name}"
        for bounds in found:
            assert tuple(float(x) for x in bounds.split(",")) == metrics.BUCKETS, path.name


def test_exposition_parses_and_reports_counters_gauges_and_histograms() -> None:
    text = metrics.render(
        FakeStore(TOTALS, GAUGES), FakeQueue({"ready": 4, "delayed": 2, "leased": 1, "last_sweep": 1700000000.5})
    )
    got = parse(text)
    assert got["tasklane_tasks_submitted_total"][frozenset({("task_name", "noop")})] == 7
    assert got["tasklane_tasks_submitted_total"][frozenset({("task_name", "fail")})] == 0
    assert got["tasklane_tasks_dead_lettered_total"][frozenset({("task_name", "fail")})] == 2
    assert got["tasklane_ready_tasks"][frozenset({("priority", "high")})] == 4
    assert got["tasklane_ready_tasks"][frozenset({("priority", "critical")})] == 0
    assert got["tasklane_delayed_tasks"][frozenset({("priority", "low")})] == 2
    assert got["tasklane_in_flight_tasks"][frozenset({("priority", "normal")})] == 1
    assert got["tasklane_oldest_ready_task_age_seconds"][frozenset({("priority", "high")})] == 12.5
    assert got["tasklane_dead_letter_tasks"][frozenset()] == 9
    assert got["tasklane_last_sweep_timestamp_seconds"][frozenset()] == 1700000000.5
    assert got["tasklane_tenant_ready_tasks"][frozenset({("tenant", "capped")})] == 10
    assert got["tasklane_tenant_running_slots"] == {frozenset({("tenant", "capped")}): 2}
    assert got["tasklane_tenant_quota_refused_total"][frozenset({("tenant", "acme"), ("quota", "max_queued")})] == 7
    assert got["tasklane_redis_up"][frozenset()] == 1
    buckets = {dict(k)["le"]: v for k, v in got["tasklane_task_run_seconds_bucket"].items()}
    assert buckets["0.005"] == 3 and buckets["0.5"] == 3 and buckets["1.0"] == 4 and buckets["+Inf"] == 5
    assert got["tasklane_task_run_seconds_count"][frozenset({("task_name", "noop")})] == 5
    assert got["tasklane_task_run_seconds_sum"][frozenset({("task_name", "noop")})] == pytest.approx(5000.706)
    assert "# TYPE tasklane_tasks_completed_total counter" in text
    assert "# TYPE tasklane_task_queue_wait_seconds histogram" in text


def test_redis_down_still_renders_the_postgresql_numbers() -> None:
    got = parse(metrics.render(FakeStore(TOTALS, GAUGES), FakeQueue(None)))
    assert got["tasklane_redis_up"][frozenset()] == 0
    assert "tasklane_redis_queue_members" not in got
    assert got["tasklane_tasks_completed_total"][frozenset({("task_name", "noop")})] == 5


def test_stats_roll_rows_up_by_name_priority_and_minute() -> None:
    now = datetime(2026, 1, 2, 12, 30, 15, tzinfo=UTC)
    hour_start = datetime(2026, 1, 2, 11, 31, tzinfo=UTC)
    raw: dict[str, Any] = {
        "clock": {"now": now, "today": datetime(2026, 1, 2, tzinfo=UTC), "hour_start": hour_start},
        "live": [
            {
                "name": "a",
                "priority": "high",
                "status": "QUEUED",
                "n": 2,
                "oldest_enqueued_at": now - timedelta(seconds=30),
            },
            {"name": "b", "priority": "low", "status": "PENDING", "n": 1, "oldest_enqueued_at": None},
            {"name": "b", "priority": "low", "status": "FAILED", "n": 4, "oldest_enqueued_at": None},
        ],
        "submitted": [{"name": "a", "priority": "high", "n": 10}, {"name": "b", "priority": "low", "n": 3}],
        "finished": [
            {
                "name": "a",
                "priority": "high",
                "status": "COMPLETED",
                "n": 8,
                "timed": 8,
                "run_seconds": 4.0,
                "wait_seconds": 8.0,
            },
            {
                "name": "b",
                "priority": "low",
                "status": "FAILED",
                "n": 1,
                "timed": 1,
                "run_seconds": 9.0,
                "wait_seconds": 1.0,
            },
        ],
        "per_minute": [
            {"minute": hour_start, "kind": "SUBMITTED", "n": 5},
            {"minute": hour_start + timedelta(minutes=59), "kind": "COMPLETED", "n": 3},
        ],
    }
    snapshot = StatsSnapshot(
        clock=StatsClock.from_row(raw["clock"]),
        live=[LiveCount.from_row(r) for r in raw["live"]],
        submitted=[SubmittedCount.from_row(r) for r in raw["submitted"]],
        finished=[FinishedCount.from_row(r) for r in raw["finished"]],
        per_minute=[MinuteCount.from_row(r) for r in raw["per_minute"]],
    )
    body = presenters.stats_numbers(stats.build_stats(snapshot))
    t = body["totals"]
    assert (t["submitted"], t["completed"], t["failed"], t["queued"], t["pending"], t["dead_letters"]) == (
        13,
        8,
        1,
        2,
        1,
        4,
    )
    assert t["queue_size"] == 3 and t["avg_run_seconds"] == 0.5 and t["avg_wait_seconds"] == 1.0
    assert t["oldest_queued_age_seconds"] == 30.0
    assert [p["priority"] for p in body["by_priority"]] == ["critical", "high", "normal", "low"]
    assert body["by_priority"][0]["submitted"] == 0 and body["by_priority"][1]["completed"] == 8
    assert [n["name"] for n in body["by_name"]] == ["a", "b"]
    assert body["by_name"][1]["failed"] == 1 and body["by_name"][1]["avg_run_seconds"] is None
    assert len(body["per_minute"]) == 60
    assert body["per_minute"][0]["submitted"] == 5 and body["per_minute"][-1]["completed"] == 3


def test_stats_numbers_keep_the_api_shape_and_key_order() -> None:
    clock = StatsClock(
        now=datetime(2026, 1, 2, 12, 0, tzinfo=UTC),
        today=datetime(2026, 1, 2, tzinfo=UTC),
        hour_start=datetime(2026, 1, 2, 11, 1, tzinfo=UTC),
    )
    numbers = stats.build_stats(StatsSnapshot(clock=clock, live=[], submitted=[], finished=[], per_minute=[]))
    body = presenters.stats_numbers(numbers)
    assert list(body) == ["generated_at", "today_since", "totals", "by_priority", "by_name", "per_minute"]
    assert list(body["totals"]) == [
        *stats.COUNT_FIELDS,
        "queue_size",
        "avg_run_seconds",
        "avg_wait_seconds",
        "oldest_queued_age_seconds",
    ]
    assert body["by_priority"][0] == {"priority": "critical", **body["totals"]}
    assert body["by_name"] == [] and body["per_minute"][0] == {
        "minute": "2026-01-02T11:01:00+00:00",
        "submitted": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
