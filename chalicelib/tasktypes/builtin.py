"""Built-in executors for smoke tests and operations: noop, sleep, fail."""

from __future__ import annotations

from typing import Any

from chalicelib.core.errors import PermanentError, RetryableError, TaskCancelled
from chalicelib.tasktypes.catalog import as_int, registry, require
from chalicelib.tasktypes.context import TaskContext


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@registry.task("noop")
def noop(payload: Any, ctx: TaskContext) -> Any:
    """Returns its payload; a task with parents (depends_on, a workflow step) returns
    {"payload": its payload, "parents": its parents' results by step name or id}."""
    if ctx.parent_results is not None:
        return {"payload": payload, "parents": dict(ctx.parent_results)}
    return payload


def _validate_sleep(payload: Any) -> None:
    seconds = payload.get("seconds", 0) if isinstance(payload, dict) else None
    require(_number(seconds) and 0 <= float(seconds or 0) <= 900, 'sleep needs {"seconds": 0..900}')


@registry.task(
    "sleep",
    validate=_validate_sleep,
    payload_schema={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 900}},
    },
)
def sleep(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Sleeps ``payload["seconds"]``, stopping early when cancelled."""
    seconds = float(payload.get("seconds", 0))
    if ctx.wait(seconds):
        raise TaskCancelled("cancelled while sleeping")
    return {"slept": seconds, "attempt": ctx.attempt}


def _validate_fail(payload: Any) -> None:
    require(isinstance(payload, dict), "fail needs an object payload")
    times = as_int(payload.get("times", 0))
    require(
        times is not None and times >= 0,
        'fail: "times" must be a non-negative integer',
    )
    require(isinstance(payload.get("permanent", False), bool), 'fail: "permanent" must be a boolean')
    require(isinstance(payload.get("message", ""), str), 'fail: "message" must be a string')


@registry.task(
    "fail",
    validate=_validate_fail,
    payload_schema={
        "type": "object",
        "properties": {
            "times": {"type": "integer", "minimum": 0},
            "permanent": {"type": "boolean"},
            "message": {"type": "string"},
        },
    },
)
def fail(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Fails the first ``times`` attempts (retryable), or always with ``permanent``."""
    if payload.get("permanent"):
        raise PermanentError(payload.get("message") or "permanent failure requested")
    times = as_int(payload.get("times", 0)) or 0
    if ctx.attempt <= times:
        raise RetryableError(payload.get("message") or f"transient failure {ctx.attempt} of {times}")
    return {"succeeded_on_attempt": ctx.attempt}
