"""The one validate-then-run path of a task attempt, shared by the drainer's lanes
and the executor Lambda function (``remote.handle``)."""

from __future__ import annotations

import time
from typing import Any

from chalicelib.core.errors import TaskCancelled
from chalicelib.observability.powertools import task_log_context
from chalicelib.tasktypes.catalog import Registered
from chalicelib.tasktypes.context import TaskContext


def run_attempt(entry: Registered, payload: Any, ctx: TaskContext) -> Any:
    """Start the attempt's clock, then validate the payload and run the task type.

    Validation runs again here, not only at submit: the task type's rules may have
    changed since (a deploy), and a payload that no longer passes fails permanently."""
    ctx.started_monotonic = time.monotonic()
    if ctx.cancel_requested:
        raise TaskCancelled("cancelled before it started")
    with task_log_context(ctx.task_id, ctx.name, ctx.tenant, ctx.attempt):  # every log line names the task
        if entry.validate is not None:
            entry.validate(payload)
        return entry.run(payload, ctx)
