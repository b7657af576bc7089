"""Declared task types run by the real drainer against stand-ins on 127.0.0.1.

Lambda target.  moto's Lambda needs Docker to run code, so the function is a local
HTTP server speaking the Lambda Invoke API (``POST /2015-03-31/functions/{name}/
invocations``) at the AWS endpoint URL (``TASKLANE_AWS_ENDPOINT``).  boto3 and
botocore are the real ones, so this covers the wire contract: the request body (the
event: task id, attempt, tenant, deadline, payload), the function name or ARN and
the ``Qualifier``, ``X-Amz-Invocation-Type: RequestResponse``, and how an answer
with ``X-Amz-Function-Error`` and its ``errorType`` (or an invoke error such as
404 ResourceNotFoundException or 429 throttling) becomes COMPLETED, a retry or
FAILED.  What it cannot cover: IAM permissions and the real service's timeouts.

HTTP target.  A local endpoint that checks the signature with the tenant's
webhook secret and answers with scripted statuses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from chalicelib.adapters.aws import clients as awsclients
from chalicelib.adapters.webhooks import verify
from chalicelib.container import Container
from chalicelib.core.requests import parse_task
from chalicelib.services.submit import submit
from tests.helpers import drain_and_sweep_until, query

TENANT = "team-a"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:resize"


class Answer:
    """One scripted answer: status, headers and a JSON (or raw) body."""

    def __init__(
        self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None, delay: float = 0.0
    ) -> None:
        self.status = status
        self.delay = delay  # seconds before answering
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.headers = {"Content-Type": "application/json", **(headers or {})}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (the timeout test) is expected, not news


class Stand:
    """A server on 127.0.0.1 that records each POST and answers from a script
    (``default`` once the script is used up)."""

    def __init__(self, default: Answer) -> None:
        self.calls: list[dict[str, Any]] = []
        self.script: list[Answer] = []
        self.on_call: Callable[[dict[str, str]], None] | None = None  # sees each call's headers
        stand = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)
                stand.calls.append(
                    {
                        "at": time.monotonic(),
                        "path": unquote(parts.path),
                        "query": parse_qs(parts.query),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                if stand.on_call is not None:
                    stand.on_call(stand.calls[-1]["headers"])
                answer = stand.script.pop(0) if stand.script else default
                time.sleep(answer.delay)  # a slow endpoint, for the timeout test
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand() -> Iterator[Callable[[Answer], Stand]]:
    made: list[Stand] = []

    def factory(default: Answer) -> Stand:
        made.append(Stand(default))
        return made[-1]

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def declared(
    make_rt: Callable[..., Container], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[dict[str, Any], str], Container]:
    """A runtime whose declarations file holds ``types``; AWS calls go to ``endpoint``."""

    def factory(types: dict[str, Any], endpoint: str = "") -> Container:
        if endpoint:
            monkeypatch.setenv("TASKLANE_AWS_ENDPOINT", endpoint)
            monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
            monkeypatch.delenv("LOCALSTACK_HOST", raising=False)
            awsclients.reset()
            monkeypatch.setattr(awsclients, "_clients", {})  # and again when the test ends
        path = tmp_path / "tasktypes.json"
        path.write_text(json.dumps({"task_types": types}))
        return make_rt(task_types_file=str(path))

    return factory


def _submit(rt: Container, body: dict[str, Any]) -> str:
    return submit(rt, TENANT, parse_task(body, rt.settings, rt.registry)).task.id


def _row(rt: Container, task_id: str) -> dict[str, Any]:
    [row] = query(
        rt.settings.database_url,
        "SELECT status, attempts, result, last_error, last_error_type, max_retries, priority FROM tasks WHERE id = %s",
        task_id,
    )
    keys = ("status", "attempts", "result", "last_error", "last_error_type", "max_retries", "priority")
    return dict(zip(keys, row, strict=True))


def _final(rt: Container, task_id: str) -> dict[str, Any]:
    drain_and_sweep_until(rt, lambda: _row(rt, task_id)["status"] in ("COMPLETED", "FAILED"))
    return _row(rt, task_id)


def _function_error(error_type: str, message: str = "boom") -> Answer:
    return Answer(200, {"errorType": error_type, "errorMessage": message}, {"X-Amz-Function-Error": "Unhandled"})


LAMBDA_TYPE = {
    "resize": {
        "lambda": {"function": ARN, "qualifier": "live", "permanent_errors": ["ValueError", "PermanentError"]},
        "payload_schema": {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}},
        "max_retries": 2,
        "priority": "high",
    }
}


def test_lambda_target_gets_the_event_and_its_answer_is_the_result(
    declared: Callable[..., Container], stand: Callable[[Answer], Stand]
) -> None:
    fn = stand(Answer(200, {"width": 640}, {"X-Amz-Executed-Version": "7"}))
    rt = declared(LAMBDA_TYPE, fn.url)
    task_id = _submit(rt, {"name": "resize", "payload": {"key": "a.png"}})
    row = _final(rt, task_id)
    assert (row["status"], row["attempts"], row["result"]) == ("COMPLETED", 1, {"width": 640})
    assert (row["max_retries"], row["priority"]) == (2, "high")  # the declaration's defaults
    [call] = fn.calls
    assert call["path"] == f"/2015-03-31/functions/{ARN}/invocations"
    assert call["query"] == {"Qualifier": ["live"]}
    assert call["headers"]["x-amz-invocation-type"] == "RequestResponse"
    event = json.loads(call["body"])
    assert event["tasklane"] == 1 and event["payload"] == {"key": "a.png"}
    task = event["task"]
    assert (task["id"], task["name"], task["tenant"], task["attempt"]) == (task_id, "resize", TENANT, 1)
    assert task["deadline"].endswith("Z") and task["timeout_seconds"] == rt.settings.default_timeout_seconds


def test_lambda_error_types_map_to_retry_or_permanent(
    declared: Callable[..., Container], stand: Callable[[Answer], Stand]
) -> None:
    fn = stand(Answer(200, {"ok": True}))
    rt = declared(LAMBDA_TYPE, fn.url)

    fn.script = [_function_error("ValueError", "key is not an image")]
    row = _final(rt, _submit(rt, {"name": "resize", "payload": {"key": "a.txt"}}))
    assert (row["status"], row["attempts"], row["last_error_type"]) == ("FAILED", 1, "PermanentError")
    assert row["last_error"] == "ValueError: key is not an image"

    fn.script = [_function_error("TimeoutError"), _function_error("Sandbox.Timedout", "Task timed out")]
    row = _final(rt, _submit(rt, {"name": "resize", "payload": {"key": "b.png"}}))
    assert (row["status"], row["attempts"], row["result"]) == ("COMPLETED", 3, {"ok": True})

    fn.script = [_function_error("KeyError")] * 3  # retryable, until max_retries (2) is spent
    row = _final(rt, _submit(rt, {"name": "resize", "payload": {"key": "c.png"}}))
    assert (row["status"], row["attempts"], row["last_error_type"]) == ("FAILED", 3, "RetryableError")
    assert row["last_error"] == "KeyError: boom"


def test_lambda_invoke_errors_map_to_retry_or_permanent(
    declared: Callable[..., Container], stand: Callable[[Answer], Stand]
) -> None:
    fn = stand(Answer(200, {"ok": True}))
    rt = declared(LAMBDA_TYPE, fn.url)
    throttled = Answer(429, {"message": "Rate exceeded"}, {"x-amzn-ErrorType": "TooManyRequestsException"})
    fn.script = [throttled]
    row = _final(rt, _submit(rt, {"name": "resize", "payload": {"key": "a.png"}}))
    assert (row["status"], row["attempts"]) == ("COMPLETED", 2)

    missing = Answer(
        404, {"Type": "User", "message": "Function not found"}, {"x-amzn-ErrorType": "ResourceNotFoundException"}
    )
    fn.script = [missing]
    row = _final(rt, _submit(rt, {"name": "resize", "payload": {"key": "a.png"}}))
    assert (row["status"], row["attempts"], row["last_error_type"]) == ("FAILED", 1, "PermanentError")
    assert "ResourceNotFoundException" in row["last_error"]


def _retry_delays(rt: Container, endpoint: Stand) -> list[float]:
    """The delay each retry was scheduled with, read when the retry calls ``endpoint``:
    the row's ``run_at`` (a claim leaves it) less the time of the failure that set it,
    both the one statement's ``now()``.  Exact, unlike the gap between two calls,
    which grows with the drainers' and the sweeper's pace."""
    delays: list[float] = []

    def seen(headers: dict[str, str]) -> None:
        if headers["tasklane-task-attempt"] != "1":
            [(delay,)] = query(
                rt.settings.database_url,
                "SELECT extract(epoch FROM t.run_at - e.at)::float8 FROM tasks t, LATERAL"
                " (SELECT at FROM task_events WHERE task_id = t.id AND to_status = 'PENDING'"
                " ORDER BY id DESC LIMIT 1) e WHERE t.id = %s",
                headers["tasklane-task-id"],
            )
            delays.append(delay)

    endpoint.on_call = seen
    return delays


def _http_type(url: str, **extra: Any) -> dict[str, Any]:
    return {"crm-sync": {"http": {"url": url + "/tasks/crm"}, "max_retries": 3, **extra}}


def test_http_target_posts_the_payload_signed_with_the_tenants_secret(
    declared: Callable[..., Container], stand: Callable[[Answer], Stand]
) -> None:
    endpoint = stand(Answer(200, {"synced": 2}))
    rt = declared(_http_type(endpoint.url))
    task_id = _submit(rt, {"name": "crm-sync", "payload": {"contact": "ada@example.com"}})
    row = _final(rt, task_id)
    assert (row["status"], row["attempts"], row["result"]) == ("COMPLETED", 1, {"synced": 2})
    [call] = endpoint.calls
    headers = call["headers"]
    assert call["path"] == "/tasks/crm" and json.loads(call["body"]) == {"contact": "ada@example.com"}
    secret = rt.store.webhook_secret(TENANT)
    assert verify(secret, headers["tasklane-timestamp"], call["body"], headers["tasklane-signature"])
    assert not verify(secret + "x", headers["tasklane-timestamp"], call["body"], headers["tasklane-signature"])
    assert (headers["tasklane-task-id"], headers["tasklane-task-name"]) == (task_id, "crm-sync")
    assert (headers["tasklane-task-attempt"], headers["tasklane-task-tenant"]) == ("1", TENANT)
    assert headers["content-type"] == "application/json"


def test_http_target_retries_503_after_retry_after(
    declared: Callable[..., Container], stand: Callable[[Answer], Stand]
) -> None:
    endpoint = stand(Answer(200, b"accepted", {"Content-Type": "text/plain"}))
    rt = declared(_http_type(endpoint.url))
    endpoint.script = [Answer(503, b"busy", {"Retry-After": "2", "Content-Type": "text/plain"})]
    delays = _retry_delays(rt, endpoint)
    row = _final(rt, _submit(rt, {"name": "crm-sync", "payload": {}}))
    assert (row["status"], row["attempts"], row["result"]) == ("COMPLETED", 2, {"status": 200})
    # The backoff alone would be ~0.05 s here (fast test settings): the retry was
    # scheduled for the server's 2 s, and was not called before them.
    assert delays == [pytest.approx(2.0, abs=0.001)], delays
    first, second = endpoint.calls
    assert second["at"] - first["at"] >= 1.9
    assert second["headers"]["tasklane-task-attempt"] == "2"


def test_http_target_5xx_without_retry_after_uses_the_backoff(
    declared: Callable[..., Container], stand: Callable[[Answer], Stand]
) -> None:
    endpoint = stand(Answer(200, {"ok": True}))
    rt = declared(_http_type(endpoint.url))
    endpoint.script = [Answer(500, {"error": "oops"}), Answer(429, {"error": "slow down"})]
    delays = _retry_delays(rt, endpoint)
    row = _final(rt, _submit(rt, {"name": "crm-sync", "payload": {}}))
    assert (row["status"], row["attempts"], row["result"]) == ("COMPLETED", 3, {"ok": True})
    assert len(delays) == 2 and all(0 < d <= rt.settings.retry_max_seconds for d in delays), delays


def test_http_target_400_fails_permanently_with_the_answer_recorded(
    declared: Callable[..., Container], stand: Callable[[Answer], Stand]
) -> None:
    endpoint = stand(Answer(400, {"error": "contact is not an email address"}))
    rt = declared(_http_type(endpoint.url))
    row = _final(rt, _submit(rt, {"name": "crm-sync", "payload": {"contact": "nope"}}))
    assert (row["status"], row["attempts"], row["last_error_type"]) == ("FAILED", 1, "PermanentError")
    assert "answered 400" in row["last_error"] and "contact is not an email address" in row["last_error"]
    assert len(endpoint.calls) == 1


def test_http_target_answer_too_large_to_record_still_completes(
    declared: Callable[..., Container], stand: Callable[[Answer], Stand]
) -> None:
    endpoint = stand(Answer(200, {"blob": "x" * 300_000}))
    rt = declared(_http_type(endpoint.url))
    row = _final(rt, _submit(rt, {"name": "crm-sync", "payload": {}}))
    assert (row["status"], row["result"]) == ("COMPLETED", {"status": 200, "answer_too_large": True})


def test_http_target_timeout_is_retried(declared: Callable[..., Container], stand: Callable[[Answer], Stand]) -> None:
    endpoint = stand(Answer(200, {"ok": True}))
    rt = declared(_http_type(endpoint.url, timeout_seconds=1))
    endpoint.script = [Answer(200, {"late": True}, delay=2.5)]
    row = _final(rt, _submit(rt, {"name": "crm-sync", "payload": {}}))
    assert (row["status"], row["attempts"], row["result"]) == ("COMPLETED", 2, {"ok": True})
