"""The Python client (tasklane_client) against the live local stack over HTTP.

Includes replay safety: a transport that delivers the request to the real stack and
then reports a network error, so the server created the task but the client never
saw the answer; the client's retry must not create a second task."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from tasklane_client import (
    AsyncClient,
    Client,
    ConflictError,
    NetworkError,
    NewTask,
    NotFoundError,
    ScheduleTask,
    TaskFailedError,
    TaskStatus,
    UnauthorizedError,
    ValidationError,
    WebhookVerificationError,
    verify_webhook,
)

from tests.helpers import query
from tests.stack import Stack


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.base_url, stack.api_key, backoff_base=0.05) as c:
        yield c


def tag() -> str:
    return uuid.uuid4().hex


def count_tasks_with_tag(stack: Stack, value: str) -> int:
    rows = query(stack.database_url, "SELECT count(*) FROM tasks WHERE payload->>'tag' = %s", value)
    return int(rows[0][0])


# --- submit, wait, errors ------------------------------------------------------------------


def test_submit_and_wait_for_the_result(client: Client) -> None:
    payload = {"hello": "world", "tag": tag()}
    task = client.submit("noop", payload, priority="high")
    assert task.status in (TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.COMPLETED)
    assert task.priority == "high" and not task.replayed
    assert client.wait(task.id, timeout=30) == payload
    done = client.get(task.id)
    assert done.status is TaskStatus.COMPLETED and done.attempts == 1 and done.finished_at is not None
    assert [e.to_status for e in client.events(task.id)][-1] == "COMPLETED"


def test_a_task_that_fails_twice_then_succeeds(client: Client) -> None:
    task = client.submit("fail", {"times": 2}, max_retries=3)
    assert client.wait(task.id, timeout=60) == {"succeeded_on_attempt": 3}
    final = client.get(task.id)
    assert final.attempts == 3
    assert [e.attempt for e in final.errors] == [1, 2]
    assert all(e.error_type == "RetryableError" for e in final.errors)


def test_api_errors_arrive_typed(stack: Stack, client: Client) -> None:
    with pytest.raises(ValidationError) as caught:
        client.submit("no-such-task-type")
    assert caught.value.status == 400 and caught.value.code == "validation_error"
    with pytest.raises(NotFoundError):
        client.get(str(uuid.uuid4()))
    with Client(stack.base_url, "tl_wrong-key") as bad, pytest.raises(UnauthorizedError):
        bad.stats()


def test_submit_many_and_idempotent_replay(client: Client) -> None:
    t = tag()
    items = [NewTask("noop", {"i": i, "tag": t}) for i in range(5)] + [{"name": "no-such-task-type"}]
    result = client.submit_many(items)
    assert (result.created, result.failed) == (5, 1)
    assert isinstance(result.results[5].error, ValidationError)
    assert [client.wait(x.id, timeout=30) for x in result.tasks] == [{"i": i, "tag": t} for i in range(5)]

    key = "order-" + tag()
    first = client.submit("noop", {"tag": t}, idempotency_key=key)
    again = client.submit("noop", {"tag": t}, idempotency_key=key)
    assert again.id == first.id and again.replayed and not first.replayed
    with pytest.raises(ConflictError):
        client.submit("noop", {"tag": "other"}, idempotency_key=key)


def test_cancel_a_delayed_task(client: Client) -> None:
    task = client.submit("noop", {"tag": tag()}, delay_seconds=3600)
    assert task.status is TaskStatus.PENDING
    cancelled = client.cancel(task.id)
    assert cancelled.status is TaskStatus.CANCELLED
    with pytest.raises(ConflictError) as caught:
        client.cancel(task.id)
    assert caught.value.details == {"status": "CANCELLED"}
    assert client.get(task.id).status is TaskStatus.CANCELLED


# --- listing over cursors ---------------------------------------------------------------------


def test_list_walks_several_small_pages(stack: Stack) -> None:
    pages: list[httpx.URL] = []

    def count(request: httpx.Request) -> None:
        if request.url.path == "/api/v1/tasks" and request.method == "GET":
            pages.append(request.url)

    t = tag()
    since = datetime.now(UTC) - timedelta(seconds=5)
    delayed = [{"name": "noop", "payload": {"i": i, "tag": t}, "delay_seconds": 3600} for i in range(7)]
    with (
        httpx.Client(event_hooks={"request": [count]}) as http,
        Client(stack.base_url, stack.api_key, http_client=http) as c,
    ):
        ids = [x.id for x in c.submit_many(delayed).tasks]
        listed = c.list(name="noop", status="PENDING", created_after=since, page_size=3)
        seen = [x for x in listed if x.payload.get("tag") == t]
    assert sorted(x.id for x in seen) == sorted(ids)
    assert len({x.id for x in seen}) == len(seen)  # no duplicates across pages
    created = [x.created_at for x in seen]
    assert created == sorted(created, reverse=True)  # newest first
    assert len(pages) >= 3 and pages[0].params.get("limit") == "3" and "cursor" in pages[1].params


# --- dead letters, schedules, webhook secret, stats ---------------------------------------------


def test_dead_letters_and_redrive(client: Client) -> None:
    task = client.submit("fail", {"permanent": True, "message": "no way", "tag": tag()})
    with pytest.raises(TaskFailedError) as caught:
        client.wait(task.id, timeout=30)
    assert (caught.value.error, caught.value.error_type) == ("no way", "PermanentError")
    assert caught.value.task.errors[-1].error == "no way"

    assert task.id in {t.id for t in client.dead_letters(name="fail", page_size=2)}
    redriven = client.redrive(task.id)
    assert redriven.id == task.id and redriven.status in (TaskStatus.QUEUED, TaskStatus.PROCESSING)
    with pytest.raises(TaskFailedError):  # permanent: fails again, back in the dead letters
        client.wait(task.id, timeout=30)
    bulk = client.redrive_many(ids=[task.id])
    assert bulk.redriven == 1 and bulk.ids == [task.id]
    with pytest.raises(TaskFailedError):
        client.wait(task.id, timeout=30)
    with pytest.raises(ConflictError):  # a COMPLETED task is not a dead letter
        done = client.submit("noop", {"tag": tag()})
        client.wait(done.id, timeout=30)
        client.redrive(done.id)


def test_schedules_crud(client: Client) -> None:
    name = "client-e2e-" + tag()
    created = client.create_schedule(
        name,
        "0 3 1 1 *",  # once a year: never fires during the test
        ScheduleTask("noop", {"tag": tag()}, priority="low"),
        timezone="Europe/Paris",
    )
    assert (created.name, created.cron, created.timezone, created.enabled) == (name, "0 3 1 1 *", "Europe/Paris", True)
    assert created.task.name == "noop" and created.task.priority == "low"
    assert created.id in {s.id for s in client.list_schedules()}

    got = client.get_schedule(created.id)
    assert len(got.next_fire_times) == 5 and got.recent_runs == []

    updated = client.update_schedule(created.id, enabled=False, cron="30 4 1 1 *", catch_up="skip")
    assert (updated.enabled, updated.cron, updated.catch_up, updated.timezone) == (
        False,
        "30 4 1 1 *",
        "skip",
        "Europe/Paris",
    )
    with pytest.raises(ValidationError):
        client.update_schedule(created.id, cron="not a cron")

    client.delete_schedule(created.id)
    with pytest.raises(NotFoundError):
        client.get_schedule(created.id)
    with pytest.raises(NotFoundError):
        client.delete_schedule(created.id)


def test_stats_and_webhook_secret(client: Client) -> None:
    client.wait(client.submit("noop", {"tag": tag()}).id, timeout=30)
    stats = client.stats()
    assert stats.totals["submitted"] >= 1 and stats.totals["completed"] >= 1
    assert any(row["name"] == "noop" for row in stats.by_name)

    before = client.webhook_secret()
    rotated = client.rotate_webhook_secret()
    assert rotated.secret != before.secret and client.webhook_secret().secret == rotated.secret


def test_a_real_webhook_verifies_with_the_client(client: Client) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = threading.Event()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        secret = client.webhook_secret().secret
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        task = client.submit("noop", {"tag": tag()}, callback_url=url)
        assert arrived.wait(30), "no webhook arrived"
    finally:
        server.shutdown()
        server.server_close()
    headers, body = received[0]
    event = verify_webhook(secret, headers, body)
    assert event.event == "task.completed" and event.task["id"] == task.id and event.task["status"] == "COMPLETED"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body.replace(b"COMPLETED", b"FAILED"))
    assert json.loads(body)["task"]["result"] == task.payload


# --- replay safety under injected network errors ------------------------------------------------


class LoseAnswers(httpx.BaseTransport):
    """Delivers each request to the real stack; for the first ``lose`` POSTs it then throws
    the answer away and raises ``error``, as if the connection broke on the way back."""

    def __init__(self, error: type[httpx.TransportError] = httpx.ConnectError, lose: int = 1) -> None:
        self.inner = httpx.HTTPTransport()
        self.error = error
        self.lose = lose
        self.posts: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method != "POST":
            return response
        self.posts.append(request)
        if len(self.posts) <= self.lose:
            response.read()
            response.close()
            raise self.error("connection lost after the server answered", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_submit_whose_answer_is_lost_is_retried_without_a_second_task(stack: Stack) -> None:
    t = tag()
    transport = LoseAnswers(lose=2)
    with Client(stack.base_url, stack.api_key, transport=transport, backoff_base=0.01) as c:
        task = c.submit("noop", {"tag": t})
        assert len(transport.posts) == 3  # two answers lost, the third seen
        assert len({r.headers["Idempotency-Key"] for r in transport.posts}) == 1
        assert task.replayed  # the answer we saw is the replay of the first attempt's task
        assert count_tasks_with_tag(stack, t) == 1
        assert task.created_at is not None
        since = task.created_at - timedelta(seconds=1)  # created_after is exclusive
        assert [x.id for x in c.list(name="noop", created_after=since) if x.payload.get("tag") == t] == [task.id]
        assert c.wait(task.id, timeout=30) == {"tag": t}


def test_a_batch_whose_answer_is_lost_is_retried_without_duplicates(stack: Stack) -> None:
    t = tag()
    transport = LoseAnswers(httpx.ReadError)  # the request surely arrived: still safe for submits
    with Client(stack.base_url, stack.api_key, transport=transport, backoff_base=0.01) as c:
        result = c.submit_many([{"name": "noop", "payload": {"i": i, "tag": t}} for i in range(4)])
    assert len(transport.posts) == 2
    assert result.created == 0 and all(item.replayed for item in result.results)
    assert count_tasks_with_tag(stack, t) == 4


def test_a_cancel_whose_answer_is_lost_is_not_blindly_resent(stack: Stack, client: Client) -> None:
    task = client.submit("noop", {"tag": tag()}, delay_seconds=3600)
    transport = LoseAnswers(httpx.ReadError)
    with Client(stack.base_url, stack.api_key, transport=transport) as c, pytest.raises(NetworkError):
        c.cancel(task.id)
    assert len(transport.posts) == 1  # not replay-safe: reported, not retried
    assert client.get(task.id).status is TaskStatus.CANCELLED  # the first attempt did it


# --- the async client -----------------------------------------------------------------------------


class AsyncLoseFirstAnswer(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.posts += 1
            if self.posts == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ConnectError("lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_async_client_end_to_end(stack: Stack) -> None:
    t = tag()

    async def main() -> None:
        async with AsyncClient(stack.base_url, stack.api_key, backoff_base=0.05) as c:
            task = await c.submit("noop", {"tag": t, "n": 1})
            batch = await c.submit_many([NewTask("noop", {"tag": t, "n": n}) for n in (2, 3)])
            results = await asyncio.gather(*(c.wait(x.id, timeout=30) for x in [task, *batch.tasks]))
            assert [r["n"] for r in results] == [1, 2, 3]
            assert task.created_at is not None
            since = task.created_at - timedelta(seconds=1)
            listed = [x.id async for x in c.list(name="noop", created_after=since, page_size=1)]
            assert {task.id, *(x.id for x in batch.tasks)} <= set(listed)
            failing = await c.submit("fail", {"permanent": True})
            with pytest.raises(TaskFailedError):
                await c.wait(failing.id, timeout=30)
            assert failing.id in [x.id async for x in c.dead_letters(name="fail", page_size=5)]
            assert (await c.redrive(failing.id)).id == failing.id
            with pytest.raises(NotFoundError):
                await c.get(str(uuid.uuid4()))

        transport = AsyncLoseFirstAnswer()
        async with AsyncClient(stack.base_url, stack.api_key, transport=transport, backoff_base=0.01) as c:
            replayed = await c.submit("noop", {"tag": t + "-replay"})
            assert replayed.replayed and transport.posts == 2

    asyncio.run(main())
    assert count_tasks_with_tag(stack, t + "-replay") == 1
