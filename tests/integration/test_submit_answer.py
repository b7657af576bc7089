"""The task a submit answers with is built from what the client sent plus the few
columns the statement sets (``insert_tasks`` returns only those): it must equal the
stored row as a later read sees it, for every option a submission can carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from chalicelib.container import Container
from chalicelib.core.batches import BatchSpec
from chalicelib.core.model import Status
from chalicelib.core.requests import TaskRequest
from chalicelib.services.submit import Submitted, submit, submit_batch, submit_many
from tests.helpers import request

TENANT = "acme"


def _requests() -> list[TaskRequest]:
    now = datetime.now(UTC)
    return [
        request(payload={"b": [1, 2.5, None], "a": {"ü": "x"}}),
        request(priority="critical", delay_seconds=30.25, max_retries=0, timeout_seconds=5),
        request(run_at=now + timedelta(hours=1), callback_url="https://example.com/hook"),
        request(run_at=now - timedelta(minutes=5), idempotency_key="k1"),
        request(unique_key="u1", unique_for_seconds=60.5, expires_at=now + timedelta(days=1)),
        request(unique_key="u2"),
    ]


def test_submitted_tasks_equal_their_stored_rows(rt: Container) -> None:
    out = submit_many(rt, TENANT, _requests())
    tasks = [r.task for r in out if isinstance(r, Submitted) and r.created]
    assert len(tasks) == 6
    assert [t.status for t in tasks] == [Status.QUEUED, Status.PENDING, Status.PENDING] + [Status.QUEUED] * 3
    for t in tasks:
        assert rt.store.get_task(TENANT, t.id) == t
    replay = submit_many(rt, TENANT, [request(run_at=tasks[3].run_at, idempotency_key="k1")])[0]
    assert isinstance(replay, Submitted) and replay.replayed and replay.task == tasks[3]


def test_single_submits_equal_their_stored_rows(rt: Container) -> None:
    """One task a call takes the one-task statement (``insert_task``), one with a unique
    key the general one: the answers equal the stored rows either way."""
    tasks = [submit(rt, TENANT, r).task for r in _requests()]
    assert [t.status for t in tasks] == [Status.QUEUED, Status.PENDING, Status.PENDING] + [Status.QUEUED] * 3
    for t in tasks:
        assert rt.store.get_task(TENANT, t.id) == t
        assert [(e.from_status, e.to_status) for e in rt.store.task_events(t.id)] == [(None, t.status)]
    replay = submit(rt, TENANT, request(run_at=tasks[3].run_at, idempotency_key="k1"))
    assert replay.replayed and replay.task == tasks[3]


def test_single_submits_due_now_without_a_key_equal_their_stored_rows_and_are_counted(rt: Container) -> None:
    """Those take ``insert_task_now`` (no ON CONFLICT, created_at the only column back):
    the answer is still the stored row, with its derived creation event, and each is
    counted 'submitted' once."""
    later = datetime.now(UTC) + timedelta(days=1)
    reqs = [
        request(),
        request(name="sleep", priority="low", max_retries=0, timeout_seconds=7, payload={"n": [1, "ü"]}),
        request(callback_url="https://example.com/hook", expires_at=later),
    ]
    tasks = [submit(rt, TENANT, r).task for r in reqs]
    for t in tasks:
        assert t.status is Status.QUEUED and t.run_at == t.enqueued_at == t.created_at
        assert rt.store.get_task(TENANT, t.id) == t
        assert [(e.from_status, e.to_status, e.actor) for e in rt.store.task_events(t.id)] == [
            (None, Status.QUEUED, "api")
        ]
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, sum(n) FROM task_metric_deltas WHERE metric = 'submitted' GROUP BY name ORDER BY name"
        ).fetchall()
    assert rows == [("noop", 2), ("sleep", 1)]


def test_batch_tasks_equal_their_stored_rows(rt: Container) -> None:
    result = submit_batch(rt, TENANT, _requests(), spec=BatchSpec())
    assert result.batch is not None and result.all_created
    for item in result.items:
        assert item.submitted is not None
        task = item.submitted.task
        assert task.batch_id == result.batch.id and task.has_followers
        assert rt.store.get_task(TENANT, task.id) == task
