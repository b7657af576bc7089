"""The Python client (client/tasklane_client) against httpx.MockTransport: no network.

Error mapping, safe retries (the same idempotency key on every attempt), 429
Retry-After, cursor pagination, wait(), and the async client on the same core."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tasklane_client import (
    ApiError,
    AsyncClient,
    Client,
    ClientError,
    ConflictError,
    NetworkError,
    NewTask,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ScheduleRun,
    ServerError,
    TaskCancelledError,
    TaskFailedError,
    TasklaneError,
    TaskStatus,
    TypePause,
    UnauthorizedError,
    UnavailableError,
    UnsupportedMediaTypeError,
    ValidationError,
    WaitTimeoutError,
)
from tasklane_client.errors import parse_retry_after

BASE = "http://tasklane.test"
KEY = "tl_test-key"


def task_json(status: str = "QUEUED", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": fields.pop("id", str(uuid.uuid4())),
        "name": "noop",
        "status": status,
        "priority": "normal",
        "payload": {},
        "result": None,
        "attempts": 0,
        "max_retries": 3,
        "timeout_seconds": 300,
        "run_at": None,
        "last_error": None,
        "last_error_type": None,
        "cancel_requested": False,
        "idempotency_key": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "enqueued_at": None,
        "started_at": None,
        "finished_at": None,
        "callback_url": None,
        "schedule_id": None,
        "progress": None,
        "progress_message": None,
    }
    body.update(fields)
    return body


def error(status: int, code: str, message: str = "nope", **kw: Any) -> httpx.Response:
    details = kw.pop("details", None)
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return httpx.Response(status, json={"error": err}, **kw)


class Recorder:
    """A MockTransport handler that answers from a script and records requests."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def make_client(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> tuple[Client, list[float]]:
    client = Client(BASE, KEY, transport=httpx.MockTransport(handler), **kw)
    slept: list[float] = []
    client._sleep = slept.append
    return client, slept


# --- request building ----------------------------------------------------------------


def test_submit_sends_key_json_and_an_idempotency_key() -> None:
    rec = Recorder(httpx.Response(201, json=task_json(payload={"a": 1})))
    client, _ = make_client(rec)
    with client:
        task = client.submit("noop", {"a": 1}, priority="high", delay_seconds=5, max_retries=2)
    (req,) = rec.requests
    assert req.method == "POST" and req.url == f"{BASE}/api/v1/tasks"
    assert req.headers["X-API-Key"] == KEY
    assert req.headers["Content-Type"] == "application/json"
    uuid.UUID(req.headers["Idempotency-Key"])  # a uuid4 made by the client
    assert json.loads(req.content) == {"name": "noop", "payload": {"a": 1}, "priority": "high", "delay_seconds": 5,
                                       "max_retries": 2}  # fmt: skip
    assert task.status is TaskStatus.QUEUED and task.payload == {"a": 1} and not task.replayed


def test_a_replayed_submit_is_flagged_and_a_given_key_is_used() -> None:
    rec = Recorder(httpx.Response(200, json=task_json(), headers={"Idempotent-Replayed": "true"}))
    client, _ = make_client(rec)
    with client:
        task = client.submit("noop", idempotency_key="order-42")
    assert rec.requests[0].headers["Idempotency-Key"] == "order-42"
    assert "idempotency_key" not in rec.bodies()[0]  # the header alone: the API refuses two that differ
    assert task.replayed


def test_get_parses_errors_progress_and_timestamps() -> None:
    body = task_json(
        "PROCESSING",
        attempts=2,
        progress=40,
        progress_message="page 2",
        trace_id="1-5759e988-bd862e3fe1be46a994272793",
        errors=[{"attempt": 1, "error": "boom", "error_type": "RetryableError", "at": "2026-01-01T00:00:01+00:00"}],
    )
    client, _ = make_client(Recorder(httpx.Response(200, json=body)))
    with client:
        task = client.get(body["id"])
    assert task.progress == 40.0 and task.progress_message == "page 2"
    assert task.trace_id == "1-5759e988-bd862e3fe1be46a994272793"
    assert task.errors[0].error == "boom" and task.errors[0].error_type == "RetryableError"
    assert task.created_at is not None and task.created_at.year == 2026
    assert task.raw["attempts"] == 2


# --- error mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "validation_error", ValidationError),
        (401, "unauthorized", UnauthorizedError),
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (413, "payload_too_large", PayloadTooLargeError),
        (415, "unsupported_media_type", UnsupportedMediaTypeError),
        (429, "rate_limited", RateLimitedError),
        (503, "unavailable", UnavailableError),
        (503, "database_unavailable", UnavailableError),
        (503, "database_conflict", UnavailableError),
        (500, "internal_error", ServerError),
        (405, "method_not_allowed", ClientError),
        (418, "teapot", ClientError),
    ],
)
def test_error_codes_map_to_typed_exceptions(status: int, code: str, cls: type[ApiError]) -> None:
    answer = error(status, code, "the message", details={"field": "name"}, headers={"Retry-After": "999"})
    client, _ = make_client(Recorder(answer), max_retries=0)
    with client, pytest.raises(cls) as caught:
        client.get(str(uuid.uuid4()))
    exc = caught.value
    assert type(exc) is cls and isinstance(exc, TasklaneError)
    assert (exc.status, exc.code, exc.message, exc.details) == (status, code, "the message", {"field": "name"})


def test_a_body_that_is_not_json_maps_by_status() -> None:
    client, _ = make_client(Recorder(httpx.Response(404, text="<html>no</html>")))
    with client, pytest.raises(NotFoundError) as caught:
        client.get("x")
    assert "no" in caught.value.message
    client, _ = make_client(Recorder(httpx.Response(500, text="")))
    with client, pytest.raises(ServerError):
        client.get("x")


def test_batch_item_errors_are_typed_and_tasks_kept_in_order() -> None:
    answer = httpx.Response(
        200,
        json={
            "created": 1,
            "failed": 1,
            "results": [
                {"index": 0, "status": 201, "replayed": False, "task": task_json()},
                {"index": 1, "status": 400, "error": {"code": "validation_error", "message": "tasks[1]: name"}},
            ],
        },
    )
    client, _ = make_client(Recorder(answer))
    with client:
        result = client.submit_many([NewTask("noop", {"i": 0}), {"name": "nope"}])
    assert (result.created, result.failed, len(result.tasks)) == (1, 1, 1)
    assert result.results[0].ok and isinstance(result.results[1].error, ValidationError)


# --- retries -------------------------------------------------------------------------


def test_503_is_retried_with_backoff_and_the_same_idempotency_key() -> None:
    rec = Recorder(error(503, "database_unavailable"), error(503, "unavailable"), httpx.Response(201, json=task_json()))
    client, slept = make_client(rec, backoff_base=0.5)
    with client:
        client.submit("noop", {"x": 1})
    keys = {r.headers["Idempotency-Key"] for r in rec.requests}
    assert len(rec.requests) == 3 and len(keys) == 1
    assert len({r.content for r in rec.requests}) == 1  # byte-identical bodies
    assert len(slept) == 2 and 0.375 <= slept[0] <= 0.5 and 0.75 <= slept[1] <= 1.0  # exponential, jittered


def test_retries_stop_after_max_retries() -> None:
    rec = Recorder(error(503, "unavailable"))
    client, slept = make_client(rec, max_retries=2)
    with client, pytest.raises(UnavailableError):
        client.submit("noop")
    assert len(rec.requests) == 3 and len(slept) == 2


def test_a_connection_error_is_retried_with_the_same_idempotency_key() -> None:
    rec = Recorder(httpx.ConnectError("refused"), httpx.ReadError("reset"), httpx.Response(201, json=task_json()))
    client, _ = make_client(rec)
    with client:
        client.submit("noop")
    assert len(rec.requests) == 3
    assert len({r.headers["Idempotency-Key"] for r in rec.requests}) == 1


def test_submit_many_keys_every_item_once_for_all_attempts() -> None:
    ok = httpx.Response(201, json={"created": 2, "failed": 0, "results": []})
    rec = Recorder(httpx.ReadTimeout("slow"), ok)
    client, _ = make_client(rec)
    with client:
        client.submit_many([{"name": "noop"}, NewTask("noop", idempotency_key="mine")])
    first, second = rec.bodies()
    assert first == second
    assert first["tasks"][1]["idempotency_key"] == "mine"
    uuid.UUID(first["tasks"][0]["idempotency_key"])


def test_network_errors_exhausted_raise_network_error_with_cause() -> None:
    client, slept = make_client(Recorder(httpx.ConnectError("refused")), max_retries=1)
    with client, pytest.raises(NetworkError) as caught:
        client.stats()
    assert isinstance(caught.value.__cause__, httpx.ConnectError) and len(slept) == 1


def test_calls_unsafe_to_replay_are_not_resent_once_the_request_may_have_arrived() -> None:
    rec = Recorder(httpx.ReadTimeout("slow"), httpx.Response(200, json=task_json("CANCELLED")))
    client, _ = make_client(rec)
    with client, pytest.raises(NetworkError):
        client.cancel(str(uuid.uuid4()))
    assert len(rec.requests) == 1
    # ... but a refused connection (never sent) and a 503 (nothing done) are retried.
    rec = Recorder(httpx.ConnectError("refused"), error(503, "unavailable"), httpx.Response(200, json=task_json()))
    client, _ = make_client(rec)
    with client:
        client.cancel(str(uuid.uuid4()))
    assert len(rec.requests) == 3


def test_429_waits_for_retry_after() -> None:
    rec = Recorder(error(429, "rate_limited", headers={"Retry-After": "2"}), httpx.Response(201, json=task_json()))
    client, slept = make_client(rec)
    with client:
        client.submit("noop")
    assert slept == [2.0] and len(rec.requests) == 2


def test_429_with_a_retry_after_beyond_the_bound_is_raised_at_once() -> None:
    rec = Recorder(error(429, "rate_limited", headers={"Retry-After": "120"}))
    client, slept = make_client(rec, max_retry_after=30)
    with client, pytest.raises(RateLimitedError) as caught:
        client.submit("noop")
    assert slept == [] and len(rec.requests) == 1 and caught.value.retry_after == 120.0


def test_4xx_other_than_429_is_never_retried() -> None:
    rec = Recorder(error(409, "conflict"))
    client, slept = make_client(rec)
    with client, pytest.raises(ConflictError):
        client.submit("noop", idempotency_key="k")
    assert len(rec.requests) == 1 and slept == []


# --- pagination ------------------------------------------------------------------------


def paged(total: int, size_param: str = "limit") -> Callable[[httpx.Request], httpx.Response]:
    ids = [str(uuid.UUID(int=i + 1)) for i in range(total)]

    def handler(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params.get(size_param, "50"))
        start = int(request.url.params.get("cursor", "0"))
        chunk = ids[start : start + limit]
        more = start + limit < total
        return httpx.Response(
            200,
            json={"items": [task_json(id=i) for i in chunk], "next_cursor": str(start + limit) if more else None},
        )

    return handler


def test_list_follows_cursors_over_every_page() -> None:
    rec = Recorder(paged(7))
    client, _ = make_client(rec)
    with client:
        tasks = list(client.list(status=TaskStatus.COMPLETED, name="noop", page_size=3))
    assert [t.id for t in tasks] == [str(uuid.UUID(int=i + 1)) for i in range(7)]
    assert len(rec.requests) == 3
    assert [r.url.params.get("cursor") for r in rec.requests] == [None, "3", "6"]
    assert all(r.url.params["status"] == "COMPLETED" and r.url.params["limit"] == "3" for r in rec.requests)


def test_list_is_lazy_and_dead_letters_paginate_too() -> None:
    rec = Recorder(paged(5))
    client, _ = make_client(rec)
    with client:
        first = next(iter(client.dead_letters(page_size=2)))
        assert first.id == str(uuid.UUID(int=1)) and len(rec.requests) == 1
        assert rec.requests[0].url.path == "/api/v1/dead-letters"
        assert len(list(client.dead_letters(page_size=2))) == 5


# --- wait ----------------------------------------------------------------------------


def test_wait_returns_the_result_once_completed() -> None:
    tid = str(uuid.uuid4())
    rec = Recorder(
        httpx.Response(200, json=task_json("QUEUED", id=tid)),
        httpx.Response(200, json=task_json("PROCESSING", id=tid)),
        httpx.Response(200, json=task_json("COMPLETED", id=tid, result={"ok": True})),
    )
    client, slept = make_client(rec)
    with client:
        assert client.wait(tid, timeout=10, poll_interval=0.1) == {"ok": True}
    assert len(rec.requests) == 3 and slept == pytest.approx([0.1, 0.15])


def test_wait_raises_the_tasks_error_when_it_failed() -> None:
    failed = task_json(
        "FAILED",
        name="fail",
        attempts=1,
        last_error="permanent failure requested",
        last_error_type="PermanentError",
        errors=[{"attempt": 1, "error": "permanent failure requested", "error_type": "PermanentError", "at": None}],
    )
    client, _ = make_client(
        Recorder(httpx.Response(200, json=task_json("PROCESSING")), httpx.Response(200, json=failed))
    )
    with client, pytest.raises(TaskFailedError) as caught:
        client.wait(failed["id"])
    exc = caught.value
    assert exc.error == "permanent failure requested" and exc.error_type == "PermanentError"
    assert exc.task.status is TaskStatus.FAILED and exc.task.errors[0].attempt == 1
    assert "PermanentError" in str(exc)


def test_wait_raises_on_cancelled_and_times_out() -> None:
    client, _ = make_client(Recorder(httpx.Response(200, json=task_json("CANCELLED"))))
    with client, pytest.raises(TaskCancelledError):
        client.wait("x")
    client, _ = make_client(Recorder(httpx.Response(200, json=task_json("PENDING"))))
    with client, pytest.raises(WaitTimeoutError) as caught:
        client.wait("x", timeout=0)
    assert isinstance(caught.value, TimeoutError) and caught.value.task.status is TaskStatus.PENDING
    client, _ = make_client(Recorder(httpx.Response(200, json=task_json("FAILED"))))
    with client:
        assert client.wait_task("x").status is TaskStatus.FAILED  # no raise


def test_wait_stops_at_its_timeout_even_inside_a_polls_retries() -> None:
    """A 429 during a poll waited its Retry-After (55 s, three times) and then raised
    RateLimitedError, from wait(timeout=2): WaitTimeoutError at the timeout instead."""
    rate_limited = error(429, "rate_limited", headers={"Retry-After": "55"})
    client, slept = make_client(Recorder(httpx.Response(200, json=task_json("QUEUED")), rate_limited))
    with client, pytest.raises(WaitTimeoutError) as caught:
        client.wait("x", timeout=2)
    assert caught.value.task.status is TaskStatus.QUEUED and 55.0 not in slept


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_a_retry_after_that_is_not_a_number_takes_the_backoff(value: str) -> None:
    """time.sleep(nan) raised ValueError; asyncio.sleep(nan) never returned."""
    assert parse_retry_after(value) is None
    rec = Recorder(error(429, "rate_limited", headers={"Retry-After": value}), httpx.Response(201, json=task_json()))
    client, slept = make_client(rec)
    with client:
        client.submit("noop")
    assert len(slept) == 1 and slept[0] == slept[0] and len(rec.requests) == 2


def test_a_schedule_run_whose_task_is_gone_has_no_status() -> None:
    run = ScheduleRun.from_dict({"fire_at": "2026-01-01T00:00:00+00:00", "task_id": "t", "status": None})
    assert run.status is None


# --- the rest of the surface -------------------------------------------------------------


def test_schedules_secret_stats_and_redrive_requests() -> None:
    schedule = {
        "id": str(uuid.uuid4()),
        "name": "nightly",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "task": {"name": "noop", "payload": {}, "priority": "low", "max_retries": 3, "timeout_seconds": 300},
        "enabled": True,
        "catch_up": "once",
        "next_fire_at": "2026-01-02T02:00:00+00:00",
        "last_fired_at": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/api/v1/schedules"):
            if request.method == "DELETE":
                return httpx.Response(204)
            if path == "/api/v1/schedules" and request.method == "GET":
                return httpx.Response(200, json={"items": [schedule]})
            return httpx.Response(201 if request.method == "POST" else 200, json=schedule)
        if path.startswith("/api/v1/webhook-secret"):
            return httpx.Response(200, json={"secret": "s3cret", "algorithm": "a", "header": "h"})
        if path == "/api/v1/stats":
            return httpx.Response(200, json={"tenant": "default", "totals": {"submitted": 3}, "by_name": []})
        if path == "/api/v1/dead-letters/redrive":
            return httpx.Response(200, json={"redriven": 2, "ids": ["a", "b"]})
        return httpx.Response(200, json=task_json("QUEUED"))

    rec = Recorder(handler)
    client, _ = make_client(rec)
    with client:
        created = client.create_schedule("nightly", "0 3 * * *", {"name": "noop"}, timezone="Europe/Paris")
        assert created.task.priority == "low" and created.next_fire_at is not None
        assert [s.id for s in client.list_schedules()] == [schedule["id"]]
        client.update_schedule(created.id, enabled=False)
        client.delete_schedule(created.id)
        assert client.webhook_secret().secret == "s3cret"
        client.rotate_webhook_secret()
        assert client.stats().totals == {"submitted": 3}
        assert client.redrive_many(name="fail").ids == ["a", "b"]
        client.redrive("t1")
    bodies = rec.bodies()
    assert bodies[0] == {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris", "task": {"name": "noop"}}
    assert (rec.requests[2].method, bodies[2]) == ("PATCH", {"enabled": False})
    assert rec.requests[3].method == "DELETE"
    assert rec.requests[5].url.path == "/api/v1/webhook-secret/rotate"
    assert bodies[7] == {"name": "fail"}
    assert rec.requests[8].url.path == "/api/v1/dead-letters/t1/redrive"


def test_cancel_by_filter_and_pause_requests() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/tasks/cancel":
            body = {"cancelled": 2, "cancel_requested": 1, "ids": ["a", "b"], "requested_ids": ["c"], "more": True}
            return httpx.Response(200, json=body)
        if request.url.path.endswith("/pause"):
            return httpx.Response(200, json={"name": "acme.x/y", "paused": True, "changed": True, "moved": 4})
        return httpx.Response(200, json={"name": "acme.x/y", "paused": False, "changed": True, "requeued": 4})

    rec = Recorder(handler)
    client, _ = make_client(rec)
    with client:
        done = client.cancel_many(status=TaskStatus.QUEUED, name="noop", limit=10)
        assert (done.cancelled, done.cancel_requested, done.requested_ids, done.more) == (2, 1, ["c"], True)
        assert client.pause_task_type("acme.x/y") == TypePause("acme.x/y", True, True, 4)
        assert client.resume_task_type("acme.x/y").moved == 4
        with pytest.raises(ValueError):
            client.cancel_many(limit=5)
    assert rec.bodies()[0] == {"status": "QUEUED", "name": "noop", "limit": 10}
    assert rec.requests[1].url.raw_path == b"/api/v1/task-types/acme.x%2Fy/pause"
    assert len(rec.requests) == 3


def test_argument_errors_are_raised_before_any_request() -> None:
    rec = Recorder(httpx.Response(200))
    client, _ = make_client(rec)
    with client:
        with pytest.raises(ValueError, match="at least one"):
            client.submit_many([])
        with pytest.raises(ValueError, match="ids or name"):
            client.redrive_many()
        with pytest.raises(ValueError, match="at least one field"):
            client.update_schedule("s")
        for odd in ("", ".", ".."):  # the task list, or a path resolved away
            with pytest.raises(ValueError, match="not an id"):
                client.get(odd)
    assert rec.requests == []
    with pytest.raises(ValueError, match="api_key"):
        Client(BASE, "")


# --- async -----------------------------------------------------------------------------


def make_async(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> tuple[AsyncClient, list[float]]:
    client = AsyncClient(BASE, KEY, transport=httpx.MockTransport(handler), **kw)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client._sleep = sleep
    return client, slept


def test_async_client_retries_with_the_same_key_and_maps_errors() -> None:
    rec = Recorder(httpx.ConnectError("refused"), error(503, "unavailable"), httpx.Response(201, json=task_json()))

    async def main() -> None:
        client, slept = make_async(rec)
        async with client:
            task = await client.submit("noop", {"a": 1})
            assert task.status is TaskStatus.QUEUED and len(slept) == 2
        client, _ = make_async(Recorder(error(404, "not_found")))
        async with client:
            with pytest.raises(NotFoundError):
                await client.get("x")

    asyncio.run(main())
    assert len(rec.requests) == 3 and len({r.headers["Idempotency-Key"] for r in rec.requests}) == 1


def test_async_list_and_wait() -> None:
    tid = str(uuid.uuid4())
    waits = Recorder(
        httpx.Response(200, json=task_json("QUEUED", id=tid)),
        httpx.Response(200, json=task_json("FAILED", id=tid, last_error="x", last_error_type="PermanentError")),
    )

    async def main() -> None:
        client, _ = make_async(paged(5))
        async with client:
            ids = [t.id async for t in client.list(page_size=2)]
        assert len(ids) == 5
        client, slept = make_async(waits)
        async with client:
            with pytest.raises(TaskFailedError):
                await client.wait(tid)
        assert len(slept) == 1

    asyncio.run(main())
