"""What a task returns or raises never takes its batch or its drainer down.

A batch's outcomes are recorded by one statement, as jsonb: one value PostgreSQL
refuses there (NaN, U+0000, a lone surrogate) used to fail it for every task of the
batch, and the drainer with it; the tasks stayed PROCESSING until their leases
expired, ran again, and failed the same way until their retries ran out, the
well-behaved siblings included.  Now such a value fails its own task with an error
that says why, once, and the siblings complete."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.core.model import Outcome, Status
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit
from tests.helpers import drain_once, query, request, story_problems, task_stories

TENANT = "hostile-outcomes"


class _Unreadable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def _deep() -> Any:
    value: Any = "bottom"
    for _ in range(5000):
        value = [value]
    return value


# name -> (what the task does, the error type its failure is recorded with)
HOSTILE: dict[str, tuple[Callable[[], Any], str]] = {
    "nan-result": (lambda: {"score": float("nan")}, "ResultError"),
    "inf-result": (lambda: [1.0, float("-inf")], "ResultError"),
    "nul-result": (lambda: {"text": "a\x00b"}, "ResultError"),
    "surrogate-result": (lambda: "\udc80", "ResultError"),
    "deep-result": (_deep, "ResultError"),
    "nul-error": (lambda: (_ for _ in ()).throw(ValueError("bad record: \x00abc")), "ValueError"),
    "surrogate-error": (lambda: (_ for _ in ()).throw(KeyError("\ud800")), "KeyError"),
    "unreadable-error": (lambda: (_ for _ in ()).throw(_Unreadable()), "_Unreadable"),
}


def _register(rt: Container) -> None:
    for name, (body, _) in HOSTILE.items():
        rt.registry.task(name)(lambda payload, ctx, body=body: body())


def _rows(rt: Container, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    rows = query(
        rt.settings.database_url,
        "SELECT id::text, status, attempts, last_error_type, last_error FROM tasks WHERE id = ANY(%s::uuid[])",
        ids,
    )
    return {r[0]: r[1:] for r in rows}


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "one-by-one"])
def test_a_value_postgresql_refuses_fails_only_its_own_task_once(
    make_rt: Callable[..., Container], batched: bool
) -> None:
    rt = make_rt(drain_batch_size=32 if batched else 1)
    _register(rt)
    ok_before = submit(rt, TENANT, request()).task.id
    hostile = {submit(rt, TENANT, request(name, max_retries=0)).task.id: name for name in HOSTILE}
    ok_after = submit(rt, TENANT, request()).task.id
    stats = drain_once(rt, seconds=10.0)  # returns: the drainer did not go down
    assert stats["completed"] == 2 and stats["failed"] == len(HOSTILE) and stats["errors"] == []
    rows = _rows(rt, [ok_before, ok_after, *hostile])
    assert rows[ok_before][:2] == rows[ok_after][:2] == ("COMPLETED", 1)
    for task_id, name in hostile.items():
        status, attempts, error_type, error = rows[task_id]
        assert (status, attempts, error_type) == ("FAILED", 1, HOSTILE[name][1]), (name, error)
        assert "\x00" not in error
    assert story_problems(task_stories(rt.settings.database_url, list(rows))) == []


def _claimed(rt: Container, count: int) -> tuple[list[str], str]:
    ids = [submit(rt, TENANT, request()).task.id for _ in range(count)]
    token = uuid.uuid4().hex
    assert len(rt.store.claim(ids, token, 60, actor="t")) == count
    return ids, token


@pytest.mark.parametrize("sent", [False, True], ids=["recorded", "sent-first"])
def test_an_outcome_the_database_refuses_is_recorded_as_failed_and_its_siblings_as_they_were(
    make_rt: Callable[..., Container], sent: bool
) -> None:
    """The last line, for a value no check above caught (forged here): the batch is
    recorded one outcome at a time, the refused one as a failure naming the refusal."""
    rt = make_rt()
    (good, bad, retried), token = _claimed(rt, 3)
    outcomes = [
        Outcome(good, token, Status.COMPLETED, result_json='{"ok":1}'),
        Outcome(bad, token, Status.COMPLETED, result_json="NaN"),
        Outcome(retried, token, Status.PENDING, error="later", error_type="E", delay_seconds=60.0),
    ]
    drainer = Drainer(rt, name="test-refused")
    try:
        statement = rt.store.send_finish(outcomes, actor="t") if sent else None
        assert (statement is not None) is sent
        recorded = drainer._record(outcomes, statement)
    finally:
        drainer.close()
    assert {r.id: r.status for r in recorded} == {
        good: Status.COMPLETED,
        bad: Status.FAILED,
        retried: Status.PENDING,
    }
    rows = _rows(rt, [good, bad, retried])
    assert rows[good][:3] == ("COMPLETED", 1, None)
    assert rows[retried][:3] == ("PENDING", 1, "E")
    status, _, error_type, error = rows[bad]
    assert (status, error_type) == ("FAILED", "OutcomeRefused")
    assert error.startswith("the outcome (COMPLETED) could not be stored: invalid value: ")
