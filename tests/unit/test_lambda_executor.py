"""Executor mode ``lambda`` and drain waking, against botocore's Stubber (no network)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from chalicelib.adapters.aws import clients as awsclients
from chalicelib.adapters.aws import wake
from chalicelib.adapters.redis.keys import Keys
from chalicelib.adapters.redis.presence import Presence
from chalicelib.config import Settings
from chalicelib.core.errors import PermanentError, RetryableError, TaskCancelled
from chalicelib.execution.remote import RemoteExecutor, RemoteRegistry, registry_for
from chalicelib.tasktypes import TaskContext, load_builtin_task_types


def _stream(data: Any) -> StreamingBody:
    raw = json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stubber, list[dict[str, Any]]]]:
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    asked: list[dict[str, Any]] = []

    def fake(service: str, **kw: Any) -> Any:
        asked.append({"service": service, **kw})
        return client

    monkeypatch.setattr(awsclients, "client", fake)
    with Stubber(client) as stubber:
        yield stubber, asked
        stubber.assert_no_pending_responses()


def _ctx(timeout: float = 30.0) -> TaskContext:
    ctx = TaskContext(task_id="t-1", name="noop", tenant="acme", attempt=2, max_retries=3, timeout_seconds=timeout)
    ctx.started_monotonic = time.monotonic()
    return ctx


def test_remote_executor_returns_the_functions_result(lam: tuple[Stubber, list[dict[str, Any]]]) -> None:
    stubber, asked = lam
    expected = {
        "FunctionName": "tasklane-dev-executor",
        "InvocationType": "RequestResponse",
        "Payload": ANY,
    }
    stubber.add_response("invoke", {"StatusCode": 200, "Payload": _stream({"ok": 1})}, expected)
    assert RemoteExecutor("tasklane-dev-executor", "noop")({"a": 1}, _ctx(timeout=12)) == {"ok": 1}
    [request] = asked
    assert request["service"] == "lambda" and request["max_attempts"] == 1
    assert 12 < request["read_timeout"] <= 12 + 2.5  # the attempt's remaining time plus slack


@pytest.mark.parametrize(
    ("error_type", "raised"),
    [
        ("PermanentError", PermanentError),
        ("PayloadError", PermanentError),
        ("RetryableError", RetryableError),
        ("TaskCancelled", TaskCancelled),
        ("Sandbox.Timedout", RetryableError),
        ("Container.ExitError", RetryableError),
        ("KeyError", RetryableError),
    ],
)
def test_function_errors_are_classified_by_error_type(
    lam: tuple[Stubber, list[dict[str, Any]]], error_type: str, raised: type[Exception]
) -> None:
    stubber, _ = lam
    body = {"errorType": error_type, "errorMessage": "boom", "stackTrace": []}
    stubber.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _stream(body)})
    with pytest.raises(raised, match="boom") as info:
        RemoteExecutor("f", "noop")({}, _ctx())
    assert type(info.value) is raised


@pytest.mark.parametrize(
    ("code", "status", "raised"),
    [
        ("TooManyRequestsException", 429, RetryableError),
        ("ServiceException", 500, RetryableError),
        ("ResourceNotFoundException", 404, PermanentError),
        ("AccessDeniedException", 403, PermanentError),
    ],
)
def test_invoke_errors_are_classified(
    lam: tuple[Stubber, list[dict[str, Any]]], code: str, status: int, raised: type[Exception]
) -> None:
    stubber, _ = lam
    stubber.add_client_error("invoke", service_error_code=code, http_status_code=status)
    with pytest.raises(raised, match=code):
        RemoteExecutor("f", "noop")({}, _ctx())


def test_a_read_timeout_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    class Slow:
        def invoke(self, **kw: Any) -> Any:
            raise ReadTimeoutError(endpoint_url="https://lambda")

    monkeypatch.setattr(awsclients, "client", lambda service, **kw: Slow())
    with pytest.raises(RetryableError, match="timeout"):
        RemoteExecutor("f", "noop")({}, _ctx())


def test_registry_for_lambda_mode_keeps_names_and_validation() -> None:
    local = load_builtin_task_types()
    assert registry_for(local, Settings()) is local
    remote = registry_for(local, Settings(executor_mode="lambda", executor_function="fn"))
    assert isinstance(remote, RemoteRegistry) and remote.names() == local.names()
    entry = remote.get("send-email")
    assert entry is not None and isinstance(entry.run, RemoteExecutor) and entry.run.function_name == "fn"
    assert entry.validate is local.get("send-email").validate  # type: ignore[union-attr]
    assert remote.get("no-such-task") is None


def test_settings_parse_the_aws_knobs() -> None:
    s = Settings.from_env(
        {
            "TASKLANE_EXECUTOR_MODE": "LAMBDA",
            "TASKLANE_WAKE_DRAIN": "lambda",
            "TASKLANE_DRAIN_FANOUT": "3",
            "TASKLANE_DATABASE_SECRET_ARN": "arn:x",
            "AWS_REGION": "eu-west-1",
        }
    )
    assert (s.executor_mode, s.wake_drain, s.drain_fanout, s.aws_region) == ("lambda", "lambda", 3, "eu-west-1")
    assert s.database_url == "" and s.database_secret_arn == "arn:x"
    assert Settings.from_env({}).database_url.startswith("postgresql://")
    from chalicelib.config import ConfigError

    with pytest.raises(ConfigError):
        Settings.from_env({"TASKLANE_EXECUTOR_MODE": "fargate"})


# --- waking a drainer ------------------------------------------------------------------


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def exists(self, key: str) -> int:
        return int(key in self.data)

    def set(self, key: str, value: str, nx: bool = False, px: int | None = None) -> bool:
        if nx and key in self.data:
            return False
        self.data[key] = value
        return True


class FakeRuntime:
    def __init__(self, **overrides: Any) -> None:
        values: dict[str, Any] = {"wake_drain": "lambda", "drain_function": "tasklane-dev-drain", "drain_fanout": 2}
        self.settings = Settings(**{**values, **overrides})
        client = FakeRedis()
        self.queue = type("Q", (), {"client": client, "presence": Presence(client, Keys(self.settings.redis_prefix))})()


def test_wake_invokes_the_drain_function_when_no_drainer_is_alive(lam: tuple[Stubber, list[dict[str, Any]]]) -> None:
    stubber, _ = lam
    rt = FakeRuntime()
    for _ in range(2):
        stubber.add_response(
            "invoke",
            {"StatusCode": 202},
            {"FunctionName": "tasklane-dev-drain", "InvocationType": "Event", "Payload": ANY},
        )
    assert wake.maybe_wake(rt.settings, rt.queue.presence) == 2
    assert wake.maybe_wake(rt.settings, rt.queue.presence) == 0  # one waker per burst (the SET NX guard)


def test_wake_does_nothing_while_a_drainer_is_alive() -> None:
    rt = FakeRuntime()
    wake._last_mark = 0.0
    wake.mark_alive(rt.settings, rt.queue.presence)
    assert rt.queue.client.exists("{tasklane}:drainer:alive")
    assert wake.maybe_wake(rt.settings, rt.queue.presence) == 0


def test_wake_is_off_by_default() -> None:
    rt = FakeRuntime(wake_drain="off")
    assert wake.maybe_wake(rt.settings, rt.queue.presence) == 0
    assert not wake.worth_waking(rt.settings, "POST", "/api/v1/tasks", 201)


def test_wake_looks_only_after_accepted_work() -> None:
    on = FakeRuntime().settings
    assert wake.worth_waking(on, "POST", "/api/v1/tasks", 201)
    assert wake.worth_waking(on, "POST", "/api/v1/dead-letters/redrive", 200)
    assert wake.worth_waking(on, "POST", "/api/v1/workflows", 201)  # its first steps are ready
    assert wake.worth_waking(on, "POST", "/api/v1/task-types/{name}/resume", 200)  # pushed again
    assert not wake.worth_waking(on, "POST", "/api/v1/tasks", 400)
    assert not wake.worth_waking(on, "GET", "/api/v1/tasks", 200)
    assert not wake.worth_waking(on, "POST", "/api/v1/schedules", 201)


def test_the_wake_event_is_a_scheduled_event_chalice_accepts() -> None:
    from chalice.app import CloudWatchEvent

    event = CloudWatchEvent(wake.drain_event(), context=None)
    assert event.detail_type == "Scheduled Event" and event.source == "tasklane.wake"


def test_a_retry_after_crosses_the_lambda_boundary(
    lam: tuple[Stubber, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.execution import remote
    from chalicelib.execution.remote import handle
    from chalicelib.tasktypes import Registry

    reg = Registry()

    @reg.task("throttled")
    def throttled(payload: Any, ctx: TaskContext) -> Any:
        raise RetryableError("429 from the far side", retry_after=90)

    monkeypatch.setattr(remote, "_task_types", lambda: reg)  # the executor function's task types
    task = {"id": "t", "name": "throttled", "tenant": "t1", "attempt": 1, "max_retries": 3, "timeout_seconds": 5}
    with pytest.raises(RetryableError) as inside:
        handle({"tasklane": 1, "task": task, "payload": {}}, None)
    # What Lambda reports (type and message only) comes back to the drainer with the delay.
    stubber, _ = lam
    body = {"errorType": "RetryableError", "errorMessage": str(inside.value), "stackTrace": []}
    stubber.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _stream(body)})
    with pytest.raises(RetryableError) as outside:
        RemoteExecutor("f", "throttled")({}, _ctx())
    assert outside.value.retry_after == 90
    assert str(outside.value) == "RetryableError: 429 from the far side"


def test_a_snooze_crosses_the_lambda_boundary(
    lam: tuple[Stubber, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.errors import Snooze
    from chalicelib.execution import remote
    from chalicelib.execution.remote import handle
    from chalicelib.tasktypes import Registry

    reg = Registry()

    @reg.task("not-yet")
    def not_yet(payload: Any, ctx: TaskContext) -> Any:
        ctx.snooze(45, "the export is not ready")

    monkeypatch.setattr(remote, "_task_types", lambda: reg)
    task = {"id": "t", "name": "not-yet", "tenant": "t1", "attempt": 1, "max_retries": 3, "timeout_seconds": 5}
    with pytest.raises(Snooze) as inside:
        handle({"tasklane": 1, "task": task, "payload": {}}, None)
    stubber, _ = lam
    body = {"errorType": "Snooze", "errorMessage": str(inside.value), "stackTrace": []}
    stubber.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _stream(body)})
    with pytest.raises(Snooze) as outside:
        RemoteExecutor("f", "not-yet")({}, _ctx())
    assert (outside.value.seconds, outside.value.reason) == (45, "the export is not ready")
