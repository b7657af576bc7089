"""Metrics, stats and health against real PostgreSQL and Redis: the counters kept by
migration 0003's trigger match the tasks table whatever path a task took."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from chalicelib.api import presenters
from chalicelib.container import Container
from chalicelib.core.model import Status
from chalicelib.observability import metrics
from chalicelib.services import stats
from chalicelib.services.drain import Drainer
from chalicelib.services.health import Condition, health
from chalicelib.services.lifecycle import CancelOutcome, cancel, redrive_one
from chalicelib.services.submit import submit, submit_many
from chalicelib.services.sweep import sweep
from tests.helpers import drain_and_sweep_until, drain_once, lease_lapsed, query, request, status_counts, wait_for
from tests.state import empty_tables, fast_settings

TENANT = "acme"


METRICS_REDIS_DB = 11  # a db of its own: other suites flush and drain 15


@pytest.fixture
def mrt(database_url: str, redis_server: str) -> Iterator[Container]:
    """A runtime on empty tables (metric tables included) and an empty Redis db."""
    redis_url = redis_server.rsplit("/", 1)[0] + f"/{METRICS_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    empty_tables(database_url)  # every test table, the metric ones included (DELETE: see there)
    runtime = Container.build(fast_settings(database_url, redis_url))
    yield runtime
    runtime.close()


def scrape(rt: Container) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}`` parsed by Prometheus' own parser."""
    text = metrics.render(rt.store, rt.queue)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def by_name(samples: dict[tuple[tuple[str, str], ...], float]) -> dict[str, float]:
    return {dict(labels)["task_name"]: v for labels, v in samples.items() if v}


def expected_counters(database_url: str) -> dict[str, Counter[str]]:
    """What each counter must say, recomputed from the audit trail."""
    rows = query(
        database_url,
        "SELECT t.name, e.from_status, e.to_status, e.error_type FROM task_trail e JOIN tasks t ON t.id = e.task_id",
    )
    want: dict[str, Counter[str]] = {k: Counter() for k in metrics.COUNTERS}
    for name, frm, to, error_type in rows:
        if frm is None:
            want["submitted"][name] += 1
        if to == "PROCESSING":
            want["started"][name] += 1
        if to == "COMPLETED":
            want["completed"][name] += 1
        if frm == "PROCESSING" and to in ("PENDING", "FAILED"):
            want["failed"][name] += 1
        if frm == "PROCESSING" and to == "PENDING":
            want["retried"][name] += 1
        if to == "FAILED":
            want["dead_lettered"][name] += 1
        if to == "CANCELLED":
            want["cancelled"][name] += 1
        if (frm, to) == ("FAILED", "QUEUED"):
            want["redriven"][name] += 1
        if frm == "PROCESSING" and error_type == "LeaseLostError":
            want["rescued"][name] += 1
    return want


def assert_counters_match(rt: Container) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    got = scrape(rt)
    want = expected_counters(rt.settings.database_url)
    for key, (prom, _) in metrics.COUNTERS.items():
        assert by_name(got.get(prom + "_total", {})) == {k: float(v) for k, v in want[key].items()}, key
    return got


def test_counters_match_the_audit_trail_after_every_kind_of_transition(mrt: Container) -> None:
    rt = mrt
    submit_many(rt, TENANT, [request(priority=p) for p in ("critical", "high", "normal", "low") * 3])
    submit(rt, TENANT, request("fail", {"times": 1}))  # one retry, then completes
    dead = submit(rt, TENANT, request("fail", {"permanent": True})).task  # dead letter at once
    later = submit(rt, TENANT, request(delay_seconds=3600)).task  # PENDING, then cancelled
    drain_and_sweep_until(
        rt, lambda: status_counts(rt.settings.database_url).get("QUEUED", 0) == 0 and _settled(rt), timeout=30
    )
    assert cancel(rt, TENANT, later.id).outcome is CancelOutcome.CANCELLED
    redrive_one(rt, TENANT, dead.id)  # and it fails again
    drain_and_sweep_until(rt, lambda: _settled(rt), timeout=30)
    got = assert_counters_match(rt)
    assert by_name(got["tasklane_tasks_dead_lettered_total"]) == {"fail": 2.0}
    assert by_name(got["tasklane_tasks_redriven_total"]) == {"fail": 1.0}
    assert by_name(got["tasklane_tasks_cancelled_total"]) == {"noop": 1.0}
    assert got["tasklane_dead_letter_tasks"][()] == 1.0
    # Folding moves deltas into totals and changes no number.
    rt.store.fold_metric_deltas()
    assert query(rt.settings.database_url, "SELECT count(*) FROM task_metric_deltas")[0][0] == 0
    assert scrape(rt) == got or _same_counters(scrape(rt), got)


def _same_counters(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = {k for k in a if k.endswith(("_total", "_bucket", "_count", "_sum"))}
    return all(a[k] == b.get(k) for k in keys)


def _settled(rt: Container) -> bool:
    counts = status_counts(rt.settings.database_url)
    return not any(counts.get(s, 0) for s in ("QUEUED", "PROCESSING")) and not query(
        rt.settings.database_url,
        "SELECT 1 FROM tasks WHERE status = 'PENDING' AND run_at < now() + interval '1 minute'",
    )


def test_submits_are_counted_once_whichever_version_wrote_them(mrt: Container) -> None:
    """'submitted' comes from the statement inserting the tasks (migration 0037); a task
    written as a process of the previous version writes it during a deploy (its row
    without created_by, its creation event stored, in one statement) is counted by the
    trigger's general rules: each once, as the trail says, with the other rules of the
    same statement."""
    rt = mrt
    ids = [submit(rt, TENANT, request(name)).task.id for name in ("noop", "noop", "sleep")]
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "WITH ins AS (INSERT INTO tasks (id, tenant, name, status, enqueued_at)"
            " VALUES (%s, %s, 'old', 'QUEUED', now()) RETURNING id, name, status)"
            " INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name)"
            " SELECT id, NULL, status, 0, 'old-api', name FROM ins"
            " UNION ALL SELECT %s, 'QUEUED', 'CANCELLED', 0, 't', 'noop'",
            (str(uuid.uuid4()), TENANT, ids[1]),
        )
        conn.execute("UPDATE tasks SET status = 'CANCELLED', finished_at = now() WHERE id = %s", (ids[1],))
    got = assert_counters_match(rt)
    assert by_name(got["tasklane_tasks_submitted_total"]) == {"noop": 2.0, "sleep": 1.0, "old": 1.0}
    assert by_name(got["tasklane_tasks_cancelled_total"]) == {"noop": 1.0}


def test_hot_path_events_carry_what_the_trigger_counts_by(mrt: Container) -> None:
    """Claim and finish write the task's name (and its times) into their event rows, so
    the metrics trigger counts them without joining back to tasks (0006); the submit
    writes no event (its creation event is the task row's, 0037)."""
    rt = mrt
    task = submit(rt, TENANT, request()).task
    done = "SELECT 1 FROM tasks WHERE id = %s AND status = 'COMPLETED'"
    drain_and_sweep_until(rt, lambda: bool(query(rt.settings.database_url, done, task.id)), timeout=30)
    rows = query(
        rt.settings.database_url,
        """SELECT to_status, task_name, task_enqueued_at IS NOT NULL, task_started_at IS NOT NULL
           FROM task_events WHERE task_id = %s ORDER BY id""",
        task.id,
    )
    assert [tuple(r) for r in rows] == [
        ("PROCESSING", "noop", True, True),
        ("COMPLETED", "noop", False, True),
    ]


def test_histograms_count_every_claim_and_every_recorded_outcome(mrt: Container) -> None:
    rt = mrt
    submit_many(rt, TENANT, [request() for _ in range(5)] + [request("sleep", {"seconds": 0.3})])
    drain_once(rt)
    got = scrape(rt)
    wait_count = by_name(got["tasklane_task_queue_wait_seconds_count"])
    run_count = by_name(got["tasklane_task_run_seconds_count"])
    assert wait_count == {"noop": 5.0, "sleep": 1.0} == run_count
    sleep_buckets = {
        dict(labels)["le"]: v
        for labels, v in got["tasklane_task_run_seconds_bucket"].items()
        if dict(labels)["task_name"] == "sleep"
    }
    assert sleep_buckets["0.25"] == 0.0 and sleep_buckets["+Inf"] == 1.0  # it slept 0.3 s
    values = [sleep_buckets[metrics._le(b)] for b in metrics.BUCKETS] + [sleep_buckets["+Inf"]]
    assert values == sorted(values)  # cumulative
    assert by_name(got["tasklane_task_run_seconds_sum"])["sleep"] >= 0.3


def test_a_rescued_lease_counts_as_failed_retried_and_rescued(mrt: Container) -> None:
    rt = mrt
    task = submit(rt, TENANT, request()).task
    rt.queue.claim(10, 0.2)
    rt.store.claim([task.id], "00000000-0000-0000-0000-000000000001", 0.2, actor="dead-worker")  # and never finishes
    wait_for(lambda: lease_lapsed(rt.settings.database_url, task.id), timeout=10, message="the 0.2 s lease to lapse")
    sweep(rt)
    assert rt.store.get_task(TENANT, task.id).status is Status.PENDING  # type: ignore[union-attr]
    got = assert_counters_match(rt)
    assert by_name(got["tasklane_tasks_rescued_total"]) == {"noop": 1.0}
    assert by_name(got.get("tasklane_task_run_seconds_count", {})) == {}  # a dead worker's attempt has no run time


def test_gauges_show_the_live_tasks_by_state_and_priority(mrt: Container) -> None:
    rt = mrt
    submit_many(rt, TENANT, [request(priority="high"), request(priority="high"), request(priority="low")])
    submit(rt, TENANT, request(delay_seconds=600, priority="critical"))

    def oldest_by_priority(got: dict[str, Any]) -> dict[str, float]:
        return {dict(k)["priority"]: v for k, v in got["tasklane_oldest_ready_task_age_seconds"].items()}

    def aged() -> dict[str, Any] | None:
        got = scrape(rt)
        return got if oldest_by_priority(got)["high"] > 0 else None

    # The oldest ready task's age is above zero once the clock has moved past its enqueue.
    got = wait_for(aged, timeout=10, message="the oldest ready task to age")
    ready = {dict(k)["priority"]: v for k, v in got["tasklane_ready_tasks"].items()}
    assert ready == {"critical": 0.0, "high": 2.0, "normal": 0.0, "low": 1.0}
    delayed = {dict(k)["priority"]: v for k, v in got["tasklane_delayed_tasks"].items()}
    assert delayed["critical"] == 1.0 and sum(delayed.values()) == 1.0
    oldest = oldest_by_priority(got)
    assert oldest["high"] > 0 and oldest["normal"] == 0
    assert sum(got["tasklane_in_flight_tasks"].values()) == 0
    assert got["tasklane_redis_up"][()] == 1.0
    members = {dict(k)["structure"]: v for k, v in got["tasklane_redis_queue_members"].items()}
    assert members == {"ready": 3.0, "delayed": 1.0, "leases": 0.0}
    ids = rt.queue.claim(1, 30)
    rt.store.claim(ids, "00000000-0000-0000-0000-000000000002", 30, actor="test")
    assert sum(scrape(rt)["tasklane_in_flight_tasks"].values()) == 1.0
    sweep(rt)
    assert scrape(rt)["tasklane_last_sweep_timestamp_seconds"][()] == pytest.approx(time.time(), abs=5)


def test_stats_are_tenant_scoped_and_add_up(mrt: Container) -> None:
    rt = mrt
    submit_many(rt, TENANT, [request(priority="high") for _ in range(3)] + [request("fail", {"permanent": True})])
    submit(rt, "other-tenant", request())
    drain_and_sweep_until(rt, lambda: _settled(rt), timeout=30)
    submit(rt, TENANT, request(priority="low", delay_seconds=600))
    result = stats.tenant_stats(rt, TENANT)
    body = presenters.stats(result)
    totals = body["totals"]
    assert (totals["submitted"], totals["completed"], totals["failed"], totals["pending"]) == (5, 3, 1, 1)
    assert totals["dead_letters"] == 1 and totals["queue_size"] == 1 and totals["avg_run_seconds"] is not None
    high = next(p for p in body["by_priority"] if p["priority"] == "high")
    assert high["completed"] == 3
    names = {n["name"]: n for n in body["by_name"]}
    assert names["fail"]["failed"] == 1 and names["noop"]["completed"] == 3
    assert len(body["per_minute"]) == 60
    assert sum(m["completed"] for m in body["per_minute"]) == 3
    assert sum(m["submitted"] for m in body["per_minute"]) == 5
    assert body["sweeper"]["status"] == "UP"
    other = stats.tenant_stats(rt, "other-tenant").numbers.totals
    assert other.counts["submitted"] == 1 and other.counts["completed"] == 1


def test_health_reports_migration_version_and_sweeper_freshness(mrt: Container) -> None:
    rt = mrt
    sweep(rt)
    status, report = presenters.health(health(rt))
    assert status == 200 and report["status"] == "UP", report
    assert report["migration_version"] >= 3
    assert report["components"]["db"]["migration_version"] == report["migration_version"]
    assert report["components"]["sweeper"]["status"] == "UP"
    rt.queue.client.set(rt.queue.keys.last_sweep, f"{time.time() - 10_000:.3f}")
    stale = health(rt)
    assert stale.condition is Condition.DOWN and stale.sweeper.condition is Condition.DOWN
    assert stale.sweeper.message is not None and "sweep" in stale.sweeper.message


@pytest.mark.parametrize(("level", "single_logged"), [("INFO", False), ("DEBUG", True)])
def test_a_single_submit_logs_its_line_at_debug_and_a_call_of_several_at_info(
    mrt: Container, caplog: pytest.LogCaptureFixture, level: str, single_logged: bool
) -> None:
    from chalicelib.observability.log import logger

    previous = logger.log_level
    logger.setLevel(level)
    try:
        with caplog.at_level(level, logger="tasklane"):
            one = submit(mrt, TENANT, request()).task
            several = submit_many(mrt, TENANT, [request(), request()])
    finally:
        logger.setLevel(previous)
    calls = [r for r in caplog.records if r.getMessage() == "tasks submitted"]
    singles = [r for r in calls if r.count == 1]  # type: ignore[attr-defined]
    (batch,) = [r for r in calls if r.count == 2]  # type: ignore[attr-defined]
    assert batch.levelname == "INFO" and batch.tenant == TENANT  # type: ignore[attr-defined]
    assert {t.task.id for t in several if not isinstance(t, Exception)} == set(batch.task_ids)  # type: ignore[attr-defined]
    if single_logged:
        (line,) = singles
        assert line.levelname == "DEBUG" and line.task_ids == [one.id]  # type: ignore[attr-defined]
    else:
        assert singles == []


def test_a_drainer_at_info_sums_its_one_task_batches_into_one_line(
    mrt: Container, caplog: pytest.LogCaptureFixture
) -> None:
    """At low load every batch is one task: a line per batch was a line per task."""
    from chalicelib.observability.log import logger

    one_at_a_time = Container(
        settings=replace(mrt.settings, drain_batch_size=1, drain_batch_min=1),
        store=mrt.store,
        queue=mrt.queue,
        registry=mrt.registry,
        retry=mrt.retry,
    )
    ids = [submit(mrt, TENANT, request()).task.id for _ in range(3)]
    previous = logger.log_level
    logger.setLevel("INFO")
    try:
        with caplog.at_level("INFO", logger="tasklane"):
            drainer = Drainer(one_at_a_time, name="summary-test")
            try:
                stats = drain_once(one_at_a_time, drainer=drainer)
            finally:
                drainer.close()
    finally:
        logger.setLevel(previous)
    assert stats["batches"] == 3 and stats["completed"] == len(ids)
    lines = [r for r in caplog.records if getattr(r, "event", None) in ("batch", "batches")]
    (line,) = lines  # written when the drain ended, its period not over
    assert line.levelname == "INFO" and line.getMessage() == "batches finished"
    assert (line.batches, line.count, line.completed, line.lease_lost) == (3, 3, 3, 0)  # type: ignore[attr-defined]
    assert line.worker == "summary-test" and line.duration_ms_max >= 0  # type: ignore[attr-defined]


def test_event_log_lines_carry_ids_and_outcomes_but_no_payload(
    mrt: Container, caplog: pytest.LogCaptureFixture
) -> None:
    rt = mrt
    secret = "s3cret-payload-value"
    from chalicelib.observability.log import logger

    previous = logger.log_level
    logger.setLevel("DEBUG")
    try:
        with caplog.at_level("DEBUG", logger="tasklane"):
            ok = submit(rt, TENANT, request(payload={"password": secret})).task
            retry = submit(rt, TENANT, request("fail", {"times": 1, "password": secret})).task
            dead = submit(rt, TENANT, request("fail", {"permanent": True, "password": secret})).task
            drainer = Drainer(rt, name="log-test")
            try:
                drain_once(rt, drainer=drainer)
            finally:
                drainer.close()
    finally:
        logger.setLevel(previous)
    records = [r for r in caplog.records if getattr(r, "event", None)]
    by_event: dict[str, list[Any]] = {}
    for r in records:
        by_event.setdefault(r.event, []).append(r)  # type: ignore[attr-defined]
    assert {"submit", "claim", "finish", "retry", "dead_letter", "batch"} <= set(by_event)
    finished = {r.task_id: r for r in by_event["finish"]}  # type: ignore[attr-defined]
    assert finished[ok.id].outcome == "completed" and finished[ok.id].tenant == TENANT
    assert finished[ok.id].attempt == 1 and finished[ok.id].duration_ms >= 0
    (r_retry,) = by_event["retry"]
    assert r_retry.task_id == retry.id and r_retry.error_type == "RetryableError" and r_retry.task_name == "fail"
    (r_dead,) = by_event["dead_letter"]
    assert r_dead.task_id == dead.id and r_dead.levelname == "WARNING"
    assert all(secret not in r.getMessage() and secret not in str(r.__dict__) for r in caplog.records)
