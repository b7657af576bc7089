"""Declared task types' executors: a team's Lambda function or HTTP endpoint.

Both run in the drainer (also under ``TASKLANE_EXECUTOR_MODE=lambda``: running them
in the executor function would only add a hop, and the HTTP target needs the
tenant's webhook secret, which only the drainer reads).  The drainer claims,
heartbeats, times out and records their attempts like any other task's.

Lambda target: ``invoke.invoke_attempt`` (the same path executor mode ``lambda``
takes) with the declared qualifier and permanent error types.

HTTP target, push-style as Google Cloud Tasks does: the payload is POSTed as JSON,
signed like completion webhooks (``Tasklane-Timestamp`` and ``Tasklane-Signature:
v1=HMAC-SHA256(tenant's webhook secret, f"{timestamp}.{body}")``), with the task's
identity in ``Tasklane-Task-*`` headers.  2xx: done (a JSON body is the result,
else ``{"status": ...}``, with ``"answer_too_large": true`` past 256 KiB); 408,
429, 5xx, timeouts and connection errors: retry, after ``Retry-After`` when the
answer gives one; any other answer (3xx included: redirects are not followed):
permanent.  The call goes through the shared outbound client and its address guard.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.adapters.outbound_http import AddressGuard, client
from chalicelib.adapters.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.tasktypes.context import TaskContext
from chalicelib.tasktypes.declarations import HttpTargetSpec, LambdaTargetSpec
from chalicelib.tasktypes.http_request import retry_after_seconds
from chalicelib.tasktypes.invoke import event_for, invoke_attempt

MAX_RESULT_BYTES = 262144  # the runner refuses larger results anyway (TASKLANE_MAX_RESULT_BYTES)
RETRYABLE_STATUSES = frozenset({408, 429})
USER_AGENT = "Tasklane-Task/1"


class LambdaTarget:
    """Runs each attempt of ``task_name`` as one invocation of the team's function."""

    def __init__(self, task_name: str, spec: LambdaTargetSpec) -> None:
        self.task_name = task_name
        self.spec = spec

    def __call__(self, payload: Any, ctx: TaskContext) -> Any:
        return invoke_attempt(
            self.spec.function,
            event_for(self.task_name, payload, ctx),
            ctx,
            permanent_types=self.spec.permanent_errors,
            qualifier=self.spec.qualifier,
        )


class HttpTarget:
    """POSTs each attempt of ``task_name`` to the team's endpoint (see the module docstring)."""

    def __init__(self, task_name: str, spec: HttpTargetSpec, guard: AddressGuard | None = None) -> None:
        self.task_name = task_name
        self.spec = spec
        self.guard = guard or AddressGuard.from_env(allow_private=spec.allow_private)

    def __call__(self, payload: Any, ctx: TaskContext) -> Any:
        secrets = ctx.ports.webhook_secrets
        if secrets is None:
            raise PermanentError("HTTP task types need the drainer's webhook secrets (they always run inline)")
        body = json.dumps(payload, separators=(",", ":")).encode()
        exchange = client().request(
            "POST",
            self.spec.url,
            guard=self.guard,
            headers=self._headers(body, secrets.webhook_secret(ctx.tenant), ctx),
            body=body,
            timeout=max(ctx.remaining_seconds(), 0.5),
            trace=ctx.trace_headers(),  # the team's endpoint joins the task's trace
        )
        return _outcome(exchange, f"POST {self.spec.url}")

    def _headers(self, body: bytes, secret: str, ctx: TaskContext) -> dict[str, str]:
        timestamp = int(time.time())
        deadline = datetime.now(UTC) + timedelta(seconds=max(ctx.remaining_seconds(), 0.0))
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Tasklane-Task-Id": ctx.task_id,
            "Tasklane-Task-Name": self.task_name,
            "Tasklane-Task-Attempt": str(ctx.attempt),
            "Tasklane-Task-Tenant": ctx.tenant,
            "Tasklane-Task-Deadline": deadline.isoformat(timespec="seconds").replace("+00:00", "Z"),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }


def _outcome(exchange: Any, where: str) -> Any:
    """The attempt's result from the endpoint's answer, or the error that steers the retry."""
    response = exchange.response
    data = exchange.read_body(MAX_RESULT_BYTES, where)
    status = exchange.status
    text = data[:500].decode("utf-8", "replace")
    if status >= 500 or status in RETRYABLE_STATUSES:
        wait = retry_after_seconds(response.headers.get("retry-after"))
        raise RetryableError(f"{where} answered {status}: {text}", retry_after=wait)
    if not 200 <= status < 300:
        raise PermanentError(f"{where} answered {status}: {text}")
    if len(data) > MAX_RESULT_BYTES:
        # Too large to keep as a result: say so rather than fail a call that succeeded.
        return {"status": status, "answer_too_large": True}
    if "json" in (response.headers.get("content-type") or ""):
        try:
            return json.loads(data)
        except ValueError:
            pass
    return {"status": status}
