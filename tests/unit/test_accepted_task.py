"""``Accepted.task`` builds the submitted ``Task`` without its ``__init__`` (a third of
a bulk submit's client CPU): it must be the very object ``__init__`` would build."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.postgres.rows import due_now_without_key
from chalicelib.core.model import Accepted, NewTask, Priority, Status, Task

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _new(**kw: object) -> NewTask:
    fields: dict[str, object] = {
        "id": "0193a1b2-0000-7000-8000-000000000001",
        "tenant": "t1",
        "name": "send",
        "priority": "high",
        "payload_json": '{"a":[1,2]}',
        "max_retries": 4,
        "timeout_seconds": 30,
    }
    fields.update(kw)
    return NewTask(**fields)  # type: ignore[arg-type]


CASES = [
    (_new(), Accepted("x", Status.QUEUED, NOW, NOW, NOW, None)),
    (
        _new(
            idempotency_key="k",
            request_hash="h",
            callback_url="https://example.com/hook",
            trace_context="Root=1-00000000-000000000000000000000000",
            batch_id="0193a1b2-0000-7000-8000-0000000000b1",
            unique_key="u",
            unique_for_seconds=60.0,
            expires_at=NOW + timedelta(hours=1),
            payload={"a": [1, 2]},
        ),
        Accepted("x", Status.PENDING, NOW + timedelta(minutes=5), None, NOW, NOW + timedelta(minutes=1)),
    ),
]


@pytest.mark.parametrize(("new", "acc"), CASES)
def test_the_task_equals_the_one_init_builds(new: NewTask, acc: Accepted) -> None:
    task = acc.task(new)
    assert set(vars(task)) == {f.name for f in dataclasses.fields(Task)}
    built = Task(**vars(task))
    assert task == built and repr(task) == repr(built)
    assert dataclasses.replace(task, attempts=1) == dataclasses.replace(built, attempts=1)
    assert task.priority is Priority.HIGH and task.payload == {"a": [1, 2]}
    assert task.has_followers is (new.batch_id is not None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.status = Status.COMPLETED  # type: ignore[misc]


@pytest.mark.parametrize(
    ("new", "takes_it"),
    [
        (_new(), True),
        (_new(callback_url="https://example.com/hook", expires_at=NOW, trace_context="Root=1-0-0"), True),
        (_new(idempotency_key="k", request_hash="h"), False),  # may conflict: ON CONFLICT
        (_new(run_at=NOW), False),  # QUEUED or PENDING: decided against now()
        (_new(delay_seconds=0.0), False),
    ],
)
def test_only_a_task_due_now_without_a_key_takes_insert_task_now(new: NewTask, takes_it: bool) -> None:
    assert due_now_without_key(new) is takes_it


def test_a_task_queued_now_is_queued_at_its_creation() -> None:
    new = _new()
    task = Accepted.queued_now(new, NOW)
    assert task == Accepted(new.id, Status.QUEUED, NOW, NOW, NOW, None).task(new)
    assert (task.status, task.run_at, task.enqueued_at, task.created_at, task.updated_at) == (
        Status.QUEUED,
        NOW,
        NOW,
        NOW,
        NOW,
    )
