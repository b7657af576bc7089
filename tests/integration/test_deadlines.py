"""Deadlines (``expires_at``, migration 0010): a task not started by then never runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.container import Container
from chalicelib.core.errors import ValidationError
from chalicelib.core.model import Status
from chalicelib.core.requests import parse_task
from chalicelib.services import stats
from chalicelib.services.submit import submit, submit_many
from chalicelib.services.sweep import sweep
from tests.helpers import (
    drain_once,
    metric_count,
    query,
    request,
    running_workers,
    story_problems,
    task_stories,
    wait_for,
)

TENANT = "deadlines"


def _soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _past_deadline(db: str, ids: list[str]) -> bool:
    return bool(query(db, "SELECT bool_and(expires_at <= now()) FROM tasks WHERE id = ANY(%s::uuid[])", ids)[0][0])


def test_a_queued_task_past_its_deadline_is_refused_by_the_claim_and_finalised(rt: Container) -> None:
    db = rt.settings.database_url
    expired, cancelled = metric_count(db, "expired"), metric_count(db, "cancelled")
    task = submit(rt, TENANT, request(expires_at=_soon(0.3))).task
    assert task.status is Status.QUEUED and task.expires_at is not None
    wait_for(lambda: _past_deadline(db, [task.id]), timeout=5, message="the deadline")
    drained = drain_once(rt)  # the id is in Redis: the claim refuses it, the drainer expires it
    assert drained["claimed"] == 0 and drained["expired"] == 1
    done = rt.store.get_task(TENANT, task.id)
    assert done is not None and done.status is Status.CANCELLED and done.started_at is None
    assert done.last_error_type == "Expired" and "expires_at" in (done.last_error or "")
    events = [(e.from_status, e.to_status, e.error_type) for e in rt.store.task_events(task.id)]
    assert events == [(None, Status.QUEUED, None), (Status.QUEUED, Status.CANCELLED, "Expired")]
    assert metric_count(db, "expired") == expired + 1 and metric_count(db, "cancelled") == cancelled + 1
    assert rt.queue.depths() == {"ready": 0, "delayed": 0, "leased": 0}
    totals = stats.tenant_stats(rt, TENANT).numbers.totals.counts
    assert (totals["cancelled"], totals["expired"]) == (1, 1)


def test_the_sweeper_expires_waiting_tasks_and_drops_them_from_redis(rt: Container) -> None:
    db = rt.settings.database_url
    later = submit(rt, TENANT, request(delay_seconds=0.2, expires_at=_soon(0.4), callback_url="http://127.0.0.1:9/x"))
    queued = submit(rt, TENANT, request(expires_at=_soon(0.4)))
    keep = submit(rt, TENANT, request(expires_at=_soon(3600)))
    ids = [later.task.id, queued.task.id]
    assert later.task.status is Status.PENDING and rt.queue.depths()["delayed"] == 1
    wait_for(lambda: _past_deadline(db, ids), timeout=5, message="the deadlines")
    report = sweep(rt)
    assert report.expired == 2
    assert query(db, "SELECT status, last_error_type FROM tasks WHERE id = ANY(%s::uuid[])", ids) == [
        ("CANCELLED", "Expired"),
        ("CANCELLED", "Expired"),
    ]
    # Only the task with time left and the expired task's completion webhook remain queued.
    webhook = query(db, "SELECT id::text FROM tasks WHERE name = 'tasklane.webhook'")
    assert len(webhook) == 1 and rt.queue.depths() == {"ready": 2, "delayed": 0, "leased": 0}
    assert sweep(rt).expired == 0
    assert rt.store.get_task(TENANT, keep.task.id).status is Status.QUEUED  # type: ignore[union-attr]


def test_an_expired_task_never_runs_while_drainers_race_the_sweepers(make_rt: object) -> None:
    rt: Container = make_rt(drain_batch_size=10, executor_concurrency=2)  # type: ignore[operator]
    db = rt.settings.database_url
    before = metric_count(db, "expired")
    # 150 tasks of ~20 ms on 3 drainers x 2 threads: about half a second of work, with
    # deadlines spread over that half second, so some start in time and some expire.
    reqs = [request("sleep", {"seconds": 0.02}, expires_at=_soon(0.15 + i * 0.004)) for i in range(150)]
    ids = [r.task.id for r in submit_many(rt, TENANT, reqs)]  # type: ignore[union-attr]
    with running_workers(rt, drainers=3, sweepers=2) as errors:
        wait_for(
            lambda: query(db, "SELECT count(*) FROM tasks WHERE finished_at IS NULL AND name = 'sleep'")[0][0] == 0,
            timeout=30,
            message="every task to end",
        )
    assert errors == []
    rows = query(db, "SELECT status, count(*) FROM tasks WHERE id = ANY(%s::uuid[]) GROUP BY 1 ORDER BY 1", ids)
    counts = dict(rows)
    assert set(counts) <= {"COMPLETED", "CANCELLED"} and sum(counts.values()) == 150
    assert counts.get("CANCELLED", 0) > 0, "some tasks should have expired"
    # No attempt started after its deadline, and no expired task ever started.
    late = query(
        db,
        "SELECT count(*) FROM task_events e JOIN tasks t ON t.id = e.task_id"
        " WHERE e.task_id = ANY(%s::uuid[]) AND e.to_status = 'PROCESSING' AND e.at >= t.expires_at",
        ids,
    )[0][0]
    assert late == 0
    started = "SELECT count(*) FROM tasks WHERE id = ANY(%s::uuid[]) AND status = 'CANCELLED'"
    started += " AND started_at IS NOT NULL"
    assert query(db, started, ids) == [(0,)]
    assert metric_count(db, "expired") - before == counts["CANCELLED"]
    assert story_problems(task_stories(db, ids)) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at is in the past"),
        ({"expires_at": "not a time"}, "expires_at must be ISO-8601"),
        ({"delay_seconds": 7200, "expires_at": _soon(3600).isoformat()}, "expires_at is not after run_at"),
        ({"unique_for_seconds": 5}, "unique_for_seconds needs unique_key"),
    ],
)
def test_a_deadline_no_attempt_could_meet_is_a_400(rt: Container, fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_task({"name": "noop", **fields}, rt.settings, rt.registry)


def test_a_task_waiting_for_its_parents_expires_and_its_dependent_settles(rt: Container) -> None:
    db = rt.settings.database_url
    parent = submit(rt, TENANT, request(delay_seconds=3600)).task  # stays PENDING for the test
    child = submit(rt, TENANT, request(depends_on=(parent.id,), expires_at=_soon(0.3))).task
    grandchild = submit(rt, TENANT, request(depends_on=(child.id,))).task
    assert child.status is Status.WAITING
    wait_for(lambda: _past_deadline(db, [child.id]), timeout=5, message="the deadline")
    assert sweep(rt).expired == 1
    done = rt.store.get_task(TENANT, child.id)
    assert done is not None and (done.status, done.last_error_type) == (Status.CANCELLED, "Expired")
    # A cancelled parent cancels its dependents (the settling trigger of the dependencies).
    assert rt.store.get_task(TENANT, grandchild.id).status is Status.CANCELLED  # type: ignore[union-attr]
    assert rt.store.get_task(TENANT, parent.id).status is Status.PENDING  # type: ignore[union-attr]
