"""Bulk submits of ``COPY_MIN`` tasks or more go in by COPY (adapters/postgres/bulkcopy.py):
the answer must still equal the stored row, each task must have its first event, the
counters must count them, keyed tasks must keep their idempotency and unique-key
answers, and a failure must leave nothing behind."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.postgres.bulkcopy import COPY_MIN, copyable
from chalicelib.container import Container
from chalicelib.core.batches import BatchSpec
from chalicelib.core.errors import ValidationError
from chalicelib.core.model import NewTask, Status
from chalicelib.core.requests import TaskRequest
from chalicelib.services.submit import Submitted, submit_batch, submit_many
from tests.helpers import query, request

TENANT = "acme"
# COPY's text format escapes these; JSON escapes only some of them.
ODD = {"s": "tab\there\nnew\\line\rcr \\N ü \u2028", "q": '"quoted"'}


def _variety() -> list[TaskRequest]:
    now = datetime.now(UTC)
    return [
        request(payload=ODD),
        request(priority="critical", delay_seconds=30.25, max_retries=0, timeout_seconds=5),
        request(delay_seconds=0.0000005),  # half a microsecond: rounded as PostgreSQL does
        request(run_at=now + timedelta(hours=1), callback_url="https://example.com/hook?a=1\\b"),
        request(run_at=now - timedelta(minutes=5), expires_at=now + timedelta(days=1)),
        request("fail", {"times": 1}, delay_seconds=0),
    ]


def _many(extra: list[TaskRequest]) -> list[TaskRequest]:
    return extra + [request(payload={"i": i}) for i in range(COPY_MIN)]


def _events(rt: Container, ids: list[str]) -> dict[str, list[tuple[object, ...]]]:
    rows = query(
        rt.settings.database_url,
        "SELECT task_id::text, from_status, to_status, attempt, actor, task_name FROM task_trail"
        " WHERE task_id = ANY(%s::uuid[]) ORDER BY id",
        ids,
    )
    out: dict[str, list[tuple[object, ...]]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r[1:])
    return out


def test_copied_tasks_equal_their_stored_rows_with_one_event_each(rt: Container) -> None:
    requests = _many(_variety())
    out = submit_many(rt, TENANT, requests, actor="bulk\tactor")
    tasks = [r.task for r in out if isinstance(r, Submitted) and r.created]
    assert len(tasks) == len(requests)
    assert [t.status for t in tasks[:6]] == [Status.QUEUED, Status.PENDING, Status.QUEUED, Status.PENDING] + [
        Status.QUEUED
    ] * 2
    assert tasks[0].payload == ODD
    for t in tasks:
        assert rt.store.get_task(TENANT, t.id) == t
    events = _events(rt, [t.id for t in tasks])
    assert all(events[t.id] == [(None, t.status.value, 0, "bulk\tactor", t.name)] for t in tasks)


def test_a_copied_batch_opens_with_its_tasks(rt: Container) -> None:
    requests = _many([*_variety(), request(unique_key="u1")])
    result = submit_batch(rt, TENANT, requests, spec=BatchSpec())
    assert result.batch is not None and result.all_created
    assert (result.batch.total, result.batch.pending) == (len(requests), 2)
    for item in result.items:
        assert item.submitted is not None
        task = item.submitted.task
        assert task.batch_id == result.batch.id and task.has_followers
        assert rt.store.get_task(TENANT, task.id) == task


def test_copied_tasks_are_counted_as_submitted(rt: Container) -> None:
    before = dict(query(rt.settings.database_url, _SUBMITTED))
    submit_many(rt, TENANT, _many(_variety()))
    after = dict(query(rt.settings.database_url, _SUBMITTED))
    got = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k: v for k, v in got.items() if v} == {"noop": COPY_MIN + 5, "fail": 1}


_SUBMITTED = "SELECT name, sum(n)::int FROM task_metric_deltas WHERE metric = 'submitted' GROUP BY name"


def test_keyed_tasks_in_a_bulk_submit_keep_their_answers(rt: Container) -> None:
    first = submit_many(rt, TENANT, [request(idempotency_key="k1"), request(unique_key="u1")])
    held = [r.task for r in first if isinstance(r, Submitted)]
    out = submit_many(
        rt,
        TENANT,
        _many([request(idempotency_key="k1"), request(unique_key="u1"), request(idempotency_key="k2")]),
    )
    replay, duplicate, new = out[:3]
    assert isinstance(replay, Submitted) and replay.replayed and replay.task == held[0]
    assert isinstance(duplicate, Submitted) and duplicate.duplicate and duplicate.task == held[1]
    assert isinstance(new, Submitted) and new.created and rt.store.get_task(TENANT, new.task.id) == new.task
    assert all(isinstance(r, Submitted) and r.created for r in out[3:])
    counts = Counter(t for (t,) in query(rt.settings.database_url, "SELECT status FROM tasks"))
    assert counts == {"QUEUED": 2 + 1 + COPY_MIN}


def test_a_bulk_insert_that_fails_leaves_nothing(rt: Container) -> None:
    tasks = [_new(i) for i in range(COPY_MIN)] + [_new(-1, name="x" * 201, idempotency_key="k")]
    assert copyable(tasks[0]) and not copyable(tasks[-1])
    with pytest.raises(ValidationError):
        rt.store.insert_tasks(tasks)
    assert query(rt.settings.database_url, "SELECT count(*) FROM tasks") == [(0,)]
    assert query(rt.settings.database_url, "SELECT count(*) FROM task_trail") == [(0,)]


def _new(i: int, **kw: object) -> NewTask:
    fields: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "tenant": TENANT,
        "name": "noop",
        "priority": "normal",
        "payload_json": f'{{"i": {i}}}',
        "max_retries": 3,
        "timeout_seconds": 30,
    }
    fields.update(kw)
    return NewTask(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [123.4567895, 3600.0000005, 0.0000005, 0.0000015, 86399.9999995])
def test_a_copied_tasks_delay_is_rounded_as_make_interval_rounds_it(rt: Container, delay: float) -> None:
    """The same task alone (make_interval in SQL) and in a COPY batch was due 1 µs
    apart for some delays: timedelta(seconds=...) rounds the float's exact value,
    make_interval the double delay * 1e6, half to even."""
    from chalicelib.adapters.postgres.bulkcopy import _due

    task = NewTask(id=str(uuid.uuid4()), tenant="t", name="noop", priority="normal", payload_json="{}",
                   max_retries=3, timeout_seconds=30, delay_seconds=delay)  # fmt: skip
    now = datetime(2026, 12, 4, tzinfo=UTC)
    [(interval,)] = query(rt.settings.database_url, "SELECT make_interval(secs => %s::float8)", delay)
    assert _due(task, now) - now == interval
