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
from tests.helpers import Receiver, drain_and_sweep_until, query, receiving, request

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
    assert event["event"] == "task.completed"
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
