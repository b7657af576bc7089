"""The one validate-then-run path of a task attempt, shared by the drainer's lanes
and the executor Lambda function (``remote.handle``)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from chalicelib.core.errors import TaskCancelled
from chalicelib.observability.powertools import task_log_context
from chalicelib.observability.tracing import attempt_span, tracing_enabled
from chalicelib.tasktypes.catalog import Registered
from chalicelib.tasktypes.context import TaskContext

_UNTRACED = contextlib.nullcontext()


def run_attempt(entry: Registered, payload: Any, ctx: TaskContext) -> Any:
    """Start the attempt's clock, then validate the payload and run the task type.

    Validation runs again here, not only at submit: the task type's rules may have
    changed since (a deploy), and a payload that no longer passes fails permanently."""
    ctx.started_monotonic = time.monotonic()
    if ctx.cancel_requested:
        raise TaskCancelled("cancelled before it started")
    # Every log line names the task and its trace; with tracing on, the attempt is a
    # segment of the task's trace (when tracing is off, nothing is built for it).
    span = attempt_span(ctx.trace, f"attempt {ctx.name}", _annotations(ctx)) if tracing_enabled() else _UNTRACED
    with task_log_context(ctx.task_id, ctx.name, ctx.tenant, ctx.attempt, ctx.trace_id), span:
        if entry.validate is not None:
            entry.validate(payload)
        return entry.run(payload, ctx)


def _annotations(ctx: TaskContext) -> dict[str, Any]:
    return {"task_id": ctx.task_id, "task_name": ctx.name, "tenant": ctx.tenant, "attempt": ctx.attempt}
