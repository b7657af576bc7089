"""Executor mode ``lambda``: the drainer runs each task in the executor Lambda function.

``TASKLANE_EXECUTOR_MODE=inline`` (the default) runs executors on the drainer's
threads.  With ``lambda`` the drainer keeps claiming, heartbeating, timing out and
recording exactly as before, but each task's executor runs in its own Lambda
invocation (``@app.lambda_function(name="executor")``, its own memory size, IAM
role and concurrency), invoked synchronously on the one invoke path that declared
Lambda targets also take (``chalicelib/tasktypes/invoke.py``: read timeout, no
botocore retries, how ``FunctionError`` and invoke errors map to retries).  The
executor function's permanent error types are ``PermanentError``, ``PayloadError``
and ``UnknownTaskName``; a ``RetryableError``'s ``retry_after`` crosses the boundary
as a ``[retry-after=N]`` suffix of its message, a ``Snooze`` as ``[snooze=N]`` (Lambda's error answer carries only a
type and a message), which that path reads back.

Cancellation requested while the remote attempt runs is not forwarded; the task
is cancelled at the next checkpoint the drainer owns.  Internal task types (those
that need the drainer's database connections, e.g. webhooks) and declared targets
(``Registered.inline``) always run inline.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from chalicelib.config import Settings, get_settings
from chalicelib.core.errors import PermanentError, RetryableError, Snooze
from chalicelib.core.tracecontext import stored
from chalicelib.execution.attempt import run_attempt
from chalicelib.tasktypes.catalog import Registered, Registry
from chalicelib.tasktypes.context import TaskContext
from chalicelib.tasktypes.invoke import PROTOCOL, event_for, invoke_attempt
from chalicelib.tasktypes.invoke import decode_response as decode_function_response

__all__ = ["PERMANENT_TYPES", "PROTOCOL", "RemoteExecutor", "RemoteRegistry", "decode_response", "event_for", "handle"]

PERMANENT_TYPES = frozenset({"PermanentError", "PayloadError", "UnknownTaskName"})


class RemoteExecutor:
    """Runs a task type's executor in the executor Lambda function."""

    def __init__(self, function_name: str, task_name: str) -> None:
        self.function_name = function_name
        self.task_name = task_name

    def __call__(self, payload: Any, ctx: TaskContext) -> Any:
        # The same invoke path as a declared Lambda target (tasktypes/targets.py).
        return invoke_attempt(
            self.function_name,
            event_for(self.task_name, payload, ctx),
            ctx,
            permanent_types=PERMANENT_TYPES,
        )


def decode_response(response: dict[str, Any], raw: bytes) -> Any:
    """The executor function's result, or the error its ``FunctionError`` describes."""
    return decode_function_response(response, raw, PERMANENT_TYPES)


class RemoteRegistry(Registry):
    """The same task types (validation, schemas, names), with executors run remotely."""

    def __init__(self, local: Registry, function_name: str) -> None:
        super().__init__()
        self._by_name = local._by_name  # one table: registrations stay visible to both
        self.function_name = function_name

    def get(self, name: str) -> Registered | None:
        entry = super().get(name)
        if entry is None or entry.internal or entry.inline:
            return entry
        return replace(entry, run=RemoteExecutor(self.function_name, name))


def registry_for(local: Registry, settings: Settings) -> Registry:
    """``local`` for inline mode; a ``RemoteRegistry`` for lambda mode."""
    if settings.executor_mode == "lambda":
        return RemoteRegistry(local, settings.executor_function)
    return local


_types: Registry | None = None
_types_lock = threading.Lock()


def _task_types() -> Registry:
    """The executor function's task types: the built-ins and the team's modules, loaded
    once per process (a warm function reuses them)."""
    global _types
    with _types_lock:
        if _types is None:
            from chalicelib.tasktypes.loading import load_task_types

            _types = load_task_types(get_settings())
        return _types


def handle(event: dict[str, Any], context: Any) -> Any:
    """The executor Lambda function's body: run one attempt of one task.

    Errors propagate: Lambda reports them as ``FunctionError`` with the exception's
    class name as ``errorType``, which ``decode_response`` maps back."""
    if not isinstance(event, dict) or event.get("tasklane") != PROTOCOL or not isinstance(event.get("task"), dict):
        raise PermanentError("not a Tasklane executor event")
    task = event["task"]
    name = str(task.get("name"))
    entry = _task_types().get(name)
    if entry is None or entry.internal or entry.inline:
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
        trace_context=_trace_of(task),
        parent_results=task["parent_results"] if isinstance(task.get("parent_results"), dict) else None,
    )
    try:
        return run_attempt(entry, event.get("payload"), ctx)
    except PermanentError as exc:
        if type(exc).__name__ in PERMANENT_TYPES:
            raise
        # Lambda names the error by its class, and the drainer knows only these names:
        # a subclass (RefusedTarget, a team's own) would be decoded as retryable and run
        # again until its retries ran out.  Its name goes into the message instead.
        raise PermanentError(f"{type(exc).__name__}: {exc}") from exc
    except RetryableError as exc:
        if exc.retry_after is None:
            raise
        raise RetryableError(f"{exc} [retry-after={exc.retry_after:.3f}]", retry_after=exc.retry_after) from exc
    except Snooze as exc:
        raise Snooze(exc.seconds, f"{exc.reason} [snooze={exc.seconds:.3f}]") from exc


def _trace_of(task: dict[str, Any]) -> str | None:
    """The event's trace header, kept only when well formed (the event may be hand-made)."""
    trace = stored(task.get("trace"))
    return trace.header() if trace is not None else None
