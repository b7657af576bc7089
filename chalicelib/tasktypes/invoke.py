"""One task attempt as one synchronous Lambda invocation: the only invoke path.

Two callers share it: executor mode ``lambda`` (Tasklane's own ``executor``
function, ``chalicelib/execution/remote.py``) and declared task types whose
target is a team's Lambda function (``targets.LambdaTarget``).

- The function gets ``event_for(...)``: ``{"tasklane": 1, "task": {id, name,
  tenant, attempt, max_retries, timeout_seconds, deadline, trace}, "payload": ...}``
  (``deadline``: when the attempt is timed out, ISO-8601 UTC; ``trace``: the task's
  ``X-Amzn-Trace-Id`` value, also in the invocation's ``ClientContext.custom``).
- ``InvocationType=RequestResponse``; the botocore read timeout is the attempt's
  remaining time (+2 s), and the client does not retry by itself: a timed-out
  invoke may still be running, and only the retry policy (and the function's
  idempotency) may decide to run it again.
- An answer with ``FunctionError`` (the ``X-Amz-Function-Error`` header) is mapped
  by the ``errorType`` of its payload: one of ``permanent_types`` → permanent,
  ``TaskCancelled`` → cancelled, anything else (``RetryableError``, a crash,
  ``Sandbox.Timedout``, out of memory) → retryable; an ``errorMessage`` ending in
  `` [retry-after=N]`` asks for that delay (N seconds) instead of the backoff; an
  ``errorType`` ``Snooze`` whose message ends in ``[snooze=N]`` snoozes the task.
- Invoke errors: throttling, 5xx and network errors are retryable, other 4xx
  (no such function, no permission) permanent.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import PermanentError, RetryableError, Snooze, TaskCancelled

if TYPE_CHECKING:
    from chalicelib.tasktypes.context import TaskContext

PROTOCOL = 1
READ_TIMEOUT_SLACK = 2.0
# How a RetryableError's retry_after crosses the Lambda boundary (see execution/remote.py).
_RETRY_AFTER = re.compile(r" \[retry-after=([0-9]+(?:\.[0-9]+)?)\]$")
# How a Snooze crosses it (errorType "Snooze").
_SNOOZE = re.compile(r" ?\[snooze=([0-9]+(?:\.[0-9]+)?)\]$")


def event_for(name: str, payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """The function's input: the task's identity, its attempt, its deadline and payload
    (and its parents' results, for a task that has parents)."""
    deadline = datetime.now(UTC) + timedelta(seconds=max(ctx.remaining_seconds(), 0.0))
    event = {
        "tasklane": PROTOCOL,
        "task": {
            "id": ctx.task_id,
            "name": name,
            "tenant": ctx.tenant,
            "attempt": ctx.attempt,
            "max_retries": ctx.max_retries,
            "timeout_seconds": ctx.timeout_seconds,
            "deadline": deadline.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            # The task's trace (X-Amzn-Trace-Id form; null without one): the attempt
            # over there joins it, and its log lines carry its trace id.
            "trace": ctx.trace_header,
        },
        "payload": payload,
    }
    if ctx.parent_results is not None:  # a task with parents: their results, by step name or id
        event["task"]["parent_results"] = dict(ctx.parent_results)
    return event


def invoke_attempt(
    function_name: str,
    event: dict[str, Any],
    ctx: TaskContext,
    *,
    permanent_types: Collection[str],
    qualifier: str | None = None,
) -> Any:
    """Invoke ``function_name`` with ``event`` and wait for its answer (see the module docstring)."""
    from chalicelib.adapters.aws import clients as awsclients
    from chalicelib.tasktypes.aws import classify_aws_error

    budget = max(ctx.remaining_seconds(), 1.0)
    client = awsclients.client("lambda", read_timeout=budget + READ_TIMEOUT_SLACK, max_attempts=1)
    request: dict[str, Any] = {
        "FunctionName": function_name,
        "InvocationType": "RequestResponse",
        "Payload": json.dumps(event, separators=(",", ":")).encode(),
    }
    if qualifier:
        request["Qualifier"] = qualifier
    context = client_context(ctx)
    if context is not None:
        request["ClientContext"] = context
    try:
        response = client.invoke(**request)
        raw = response["Payload"].read()
    except Exception as exc:
        raise classify_aws_error(exc, f"invoking {function_name}") from exc
    return decode_response(response, raw, permanent_types)


def client_context(ctx: TaskContext) -> str | None:
    """Lambda's ``ClientContext`` (base64 JSON, at most 3,583 bytes: a trace header is
    under 100) with the task's trace header in ``custom``, for a function that reads
    the invocation's context rather than the event."""
    header = ctx.trace_header
    if header is None:
        return None
    raw = json.dumps({"custom": {"X-Amzn-Trace-Id": header}}, separators=(",", ":")).encode()
    return base64.b64encode(raw).decode()


def decode_response(response: dict[str, Any], raw: bytes, permanent_types: Collection[str]) -> Any:
    """The function's result, or the error its ``FunctionError`` describes."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not response.get("FunctionError"):
        if int(response.get("StatusCode", 200)) >= 300:
            raise RetryableError(f"the function answered status {response.get('StatusCode')}")
        return data
    error = data if isinstance(data, dict) else {}
    kind = str(error.get("errorType") or response.get("FunctionError"))
    message = str(error.get("errorMessage") or raw[:500].decode("utf-8", "replace") or kind)
    text = f"{kind}: {message}"
    if kind in permanent_types:
        raise PermanentError(text)
    if kind == "TaskCancelled":
        raise TaskCancelled(text)
    snooze = _SNOOZE.search(message) if kind == "Snooze" else None
    if snooze is not None:
        raise Snooze(float(snooze.group(1)), message[: snooze.start()])
    asked = _RETRY_AFTER.search(text)
    if asked is not None:
        raise RetryableError(text[: asked.start()], retry_after=float(asked.group(1)))
    raise RetryableError(text)
