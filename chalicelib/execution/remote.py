"""Executor mode ``lambda``: the drainer runs each task in the executor Lambda function.

``TASKLANE_EXECUTOR_MODE=inline`` (the default) runs executors on the drainer's
threads.  With ``lambda`` the drainer keeps claiming, heartbeating, timing out and
recording exactly as before, but each task's executor runs in its own Lambda
invocation (``@app.lambda_function(name="executor")``, its own memory size, IAM
role and concurrency), invoked with boto3 ``invoke`` (``RequestResponse``):

- the botocore read timeout is the attempt's remaining time (+2 s), and the
  client does not retry by itself: a timed-out invoke may still be running, and
  only the retry policy (and the executors' idempotency) may decide to run again;
- an answer with ``FunctionError`` is mapped by its ``errorType``:
  ``PermanentError``/``PayloadError``/``UnknownTaskName`` → permanent,
  ``TaskCancelled`` → cancelled, anything else (``RetryableError``, a crash,
  ``Sandbox.Timedout``, out of memory) → retryable; a ``RetryableError``'s
  ``retry_after`` crosses the boundary as a ``[retry-after=N]`` suffix of its
  message (Lambda's error answer carries only a type and a message);
- invoke errors: throttling, 5xx and network errors are retryable, other 4xx
  (no such function, no permission) permanent.

Cancellation requested while the remote attempt runs is not forwarded; the task
is cancelled at the next checkpoint the drainer owns.  Internal task types (those
that need the drainer's database connections, e.g. webhooks) always run inline.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from chalicelib.config import Settings
from chalicelib.core.errors import PermanentError, RetryableError, TaskCancelled
from chalicelib.execution.attempt import run_attempt
from chalicelib.tasktypes.catalog import Registered, Registry
from chalicelib.tasktypes.context import TaskContext

PROTOCOL = 1
PERMANENT_TYPES = {"PermanentError", "PayloadError", "UnknownTaskName"}
READ_TIMEOUT_SLACK = 2.0
_RETRY_AFTER = re.compile(r" \[retry-after=([0-9]+(?:\.[0-9]+)?)\]$")


def event_for(name: str, payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """The executor function's input: the task's identity, its attempt and payload."""
    return {
        "tasklane": PROTOCOL,
        "task": {
            "id": ctx.task_id,
            "name": name,
            "tenant": ctx.tenant,
            "attempt": ctx.attempt,
            "max_retries": ctx.max_retries,
            "timeout_seconds": ctx.timeout_seconds,
        },
        "payload": payload,
    }


class RemoteExecutor:
    """Runs a task type's executor in the executor Lambda function."""

    def __init__(self, function_name: str, task_name: str) -> None:
        self.function_name = function_name
        self.task_name = task_name

    def __call__(self, payload: Any, ctx: TaskContext) -> Any:
        from chalicelib.adapters.aws import clients as awsclients
        from chalicelib.tasktypes.aws import classify_aws_error

        budget = max(ctx.remaining_seconds(), 1.0)
        client = awsclients.client("lambda", read_timeout=budget + READ_TIMEOUT_SLACK, max_attempts=1)
        body = json.dumps(event_for(self.task_name, payload, ctx), separators=(",", ":")).encode()
        try:
            response = client.invoke(
                FunctionName=self.function_name,
                InvocationType="RequestResponse",
                Payload=body,
            )
            raw = response["Payload"].read()
        except Exception as exc:
            raise classify_aws_error(exc, f"invoking {self.function_name}") from exc
        return decode_response(response, raw)


def decode_response(response: dict[str, Any], raw: bytes) -> Any:
    """The executor's result, or the error its ``FunctionError`` describes."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not response.get("FunctionError"):
        if int(response.get("StatusCode", 200)) >= 300:
            raise RetryableError(f"executor function answered status {response.get('StatusCode')}")
        return data
    error = data if isinstance(data, dict) else {}
    kind = str(error.get("errorType") or response.get("FunctionError"))
    message = str(error.get("errorMessage") or raw[:500].decode("utf-8", "replace") or kind)
    text = f"{kind}: {message}"
    if kind in PERMANENT_TYPES:
        raise PermanentError(text)
    if kind == "TaskCancelled":
        raise TaskCancelled(text)
    asked = _RETRY_AFTER.search(text)
    if asked is not None:
        raise RetryableError(text[: asked.start()], retry_after=float(asked.group(1)))
    raise RetryableError(text)


class RemoteRegistry(Registry):
    """The same task types (validation, schemas, names), with executors run remotely."""

    def __init__(self, local: Registry, function_name: str) -> None:
        super().__init__()
        self._by_name = local._by_name  # one table: registrations stay visible to both
        self.function_name = function_name

    def get(self, name: str) -> Registered | None:
        entry = super().get(name)
        if entry is None or entry.internal:
            return entry
        return replace(entry, run=RemoteExecutor(self.function_name, name))


def registry_for(local: Registry, settings: Settings) -> Registry:
    """``local`` for inline mode; a ``RemoteRegistry`` for lambda mode."""
    if settings.executor_mode == "lambda":
        return RemoteRegistry(local, settings.executor_function)
    return local


def handle(event: dict[str, Any], context: Any) -> Any:
    """The executor Lambda function's body: run one attempt of one task.

    Errors propagate: Lambda reports them as ``FunctionError`` with the exception's
    class name as ``errorType``, which ``decode_response`` maps back."""
    from chalicelib.tasktypes import load_builtin_task_types

    if not isinstance(event, dict) or event.get("tasklane") != PROTOCOL or not isinstance(event.get("task"), dict):
        raise PermanentError("not a Tasklane executor event")
    task = event["task"]
    name = str(task.get("name"))
    entry = load_builtin_task_types().get(name)
    if entry is None or entry.internal:
        raise PermanentError(f"no executor is registered for task name {name!r}")
    timeout = float(task.get("timeout_seconds") or 300)
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        timeout = min(timeout, context.get_remaining_time_in_millis() / 1000.0)
    ctx = TaskContext(
        task_id=str(task.get("id")),
        name=name,
        tenant=str(task.get("tenant")),
        attempt=int(task.get("attempt") or 1),
        max_retries=int(task.get("max_retries") or 0),
        timeout_seconds=timeout,
    )
    try:
        return run_attempt(entry, event.get("payload"), ctx)
    except RetryableError as exc:
        if exc.retry_after is None:
            raise
        raise RetryableError(f"{exc} [retry-after={exc.retry_after:.3f}]", retry_after=exc.retry_after) from exc
