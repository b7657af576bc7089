"""Completion webhooks: signed, retried with backoff, dead-lettered, never lost."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.adapters.webhooks import verify
from chalicelib.container import Container
from chalicelib.core.model import WEBHOOK_TASK
from chalicelib.services.submit import submit
from tests.helpers import Receiver, drain_and_sweep_until, drain_once, query, receiving, request, wait_for

TENANT = "hooks"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def _webhook_tasks(rt: Container) -> list[tuple[Any, ...]]:
    return query(rt.settings.database_url, "SELECT status, attempts, payload FROM tasks WHERE name = %s", WEBHOOK_TASK)


def test_completed_task_posts_a_signed_event_that_verifies(rt: Container, receiver: Receiver) -> None:
    task = submit(rt, TENANT, request(payload={"x": 1}, callback_url=receiver.url)).task
    drain_and_sweep_until(rt, lambda: len(receiver.calls) == 1)
    call = receiver.calls[0]
    secret = rt.store.webhook_secret(TENANT)
    headers = call["headers"]
    assert verify(secret, headers["Tasklane-Timestamp"], call["body"], headers["Tasklane-Signature"])
    assert not verify("wrong-secret", headers["Tasklane-Timestamp"], call["body"], headers["Tasklane-Signature"])
    event = json.loads(call["body"])
    assert event["event"] == "task.completed" and event["delivery"] == headers["Tasklane-Delivery"]
    assert event["task"]["id"] == task.id and event["task"]["result"] == {"x": 1}
    drain_and_sweep_until(rt, lambda: [r[0] for r in _webhook_tasks(rt)] == ["COMPLETED"])


def test_failing_receiver_gets_retries_with_backoff(rt: Container, receiver: Receiver) -> None:
    receiver.script = [500, 503]
    submit(rt, TENANT, request("fail", {"permanent": True}, callback_url=receiver.url))
    drain_and_sweep_until(rt, lambda: [r[0] for r in _webhook_tasks(rt)] == ["COMPLETED"])
    assert len(receiver.calls) == 3
    assert json.loads(receiver.calls[0]["body"])["event"] == "task.failed"
    [(_, attempts, _)] = _webhook_tasks(rt)
    assert attempts == 3


def test_receiver_refusing_with_4xx_dead_letters_the_webhook(rt: Container, receiver: Receiver) -> None:
    receiver.script = [410]
    submit(rt, TENANT, request(callback_url=receiver.url))
    drain_and_sweep_until(rt, lambda: [r[0] for r in _webhook_tasks(rt)] == ["FAILED"])
    assert len(receiver.calls) == 1


def test_cancel_sends_a_cancelled_event(rt: Container, receiver: Receiver) -> None:
    from chalicelib.services import lifecycle

    task = submit(rt, TENANT, request(delay_seconds=3600, callback_url=receiver.url)).task
    assert lifecycle.cancel(rt, TENANT, task.id).outcome is lifecycle.CancelOutcome.CANCELLED
    drain_and_sweep_until(rt, lambda: len(receiver.calls) == 1)
    assert json.loads(receiver.calls[0]["body"])["event"] == "task.cancelled"


def test_private_targets_are_refused_when_configured(make_rt: Callable[..., Container]) -> None:
    from chalicelib.core.errors import ValidationError
    from chalicelib.core.requests import parse_task

    strict = make_rt(webhook_allow_private=False)
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.0.0.1/x", "ftp://example.com/x"):
        with pytest.raises(ValidationError):
            parse_task({"name": "noop", "callback_url": url}, strict.settings, strict.registry)


def test_webhook_task_name_cannot_be_submitted_by_clients(rt: Container) -> None:
    from chalicelib.core.errors import ValidationError
    from chalicelib.core.requests import parse_task

    with pytest.raises(ValidationError, match="unknown task name"):
        parse_task({"name": WEBHOOK_TASK, "payload": {"url": "http://x"}}, rt.settings, rt.registry)


def _final_by(rt: Container, path: str, receiver: Receiver) -> tuple[str, str]:
    """Bring one task with a callback to a final state by ``path``; its id and the actor."""
    from chalicelib.services import control, deadlines, lifecycle

    db = rt.settings.database_url
    if path == "finish":
        task = submit(rt, TENANT, request(payload={"n": 1}, callback_url=receiver.url)).task
        drain_once(rt)
        return task.id, "test-drain"
    if path == "cancel":
        task = submit(rt, TENANT, request(delay_seconds=3600, callback_url=receiver.url)).task
        lifecycle.cancel(rt, TENANT, task.id, actor="key:one")
        return task.id, "key:one"
    if path == "cancel_many":
        task = submit(rt, TENANT, request("sleep", delay_seconds=3600, callback_url=receiver.url)).task
        control.cancel_many(rt, TENANT, control.CancelSelection(name="sleep"), actor="key:many")
        return task.id, "key:many"
    assert path == "expiry"
    soon = query(db, "SELECT now() + interval '200 milliseconds'")[0][0]
    task = submit(rt, TENANT, request(delay_seconds=3600, expires_at=soon, callback_url=receiver.url)).task
    wait_for(lambda: query(db, "SELECT expires_at <= now() FROM tasks WHERE id = %s", task.id)[0][0], timeout=10)
    assert deadlines.expire_due(rt, actor="sweep-x") == 1
    return task.id, "sweep-x"


@pytest.mark.parametrize("path", ["finish", "cancel", "cancel_many", "expiry"])
def test_each_final_transition_creates_its_completion_webhook_in_one_shape(
    rt: Container, receiver: Receiver, path: str
) -> None:
    """Finish, a single cancel, a bulk cancel and an expiry all create the webhook through
    one SQL function (migration 0018): the same row and event whichever path it was."""
    parent, actor = _final_by(rt, path, receiver)
    db = rt.settings.database_url
    # The body is exactly what the payload function makes of the parent's final row.
    rows = query(
        db,
        "SELECT h.tenant = p.tenant, h.priority, h.max_retries, h.timeout_seconds,"
        "       h.trace_context = p.trace_context, h.enqueued_at = p.finished_at,"
        "       h.payload = tasklane_webhook_payload(p.callback_url, p.id, p.name, p.status, p.attempts,"
        "                                            p.result, p.last_error, p.last_error_type, p.finished_at),"
        "       p.status"
        " FROM tasks h JOIN tasks p ON p.id = (h.payload->'task'->>'id')::uuid"
        " WHERE h.name = %s AND p.id = %s",
        WEBHOOK_TASK,
        parent,
    )
    settings = rt.settings
    final = "COMPLETED" if path == "finish" else "CANCELLED"
    assert rows == [
        (True, "high", settings.webhook_max_retries, settings.webhook_timeout_seconds, True, True, True, final)
    ]
    [(hook_id,)] = query(db, "SELECT id::text FROM tasks WHERE name = %s", WEBHOOK_TASK)
    first = query(
        db, "SELECT from_status, to_status, attempt, actor FROM task_trail WHERE task_id = %s ORDER BY id", hook_id
    )[0]
    assert first == (None, "QUEUED", 0, actor)
    drain_and_sweep_until(rt, lambda: len(receiver.calls) == 1)
    assert json.loads(receiver.calls[0]["body"])["event"] == f"task.{final.lower()}"


def test_a_retry_creates_no_webhook_and_the_final_attempt_one(rt: Container, receiver: Receiver) -> None:
    task = submit(rt, TENANT, request("fail", {"times": 1}, callback_url=receiver.url)).task
    drain_and_sweep_until(rt, lambda: len(receiver.calls) == 1)
    db = rt.settings.database_url
    moves = query(db, "SELECT from_status, to_status FROM task_events WHERE task_id = %s", task.id)
    assert ("PROCESSING", "PENDING") in moves  # the failed first attempt went back to wait
    # One webhook, for the final attempt: the retry's PENDING is no final transition.
    assert [r[2]["task"]["attempts"] for r in _webhook_tasks(rt)] == [2]
