"""Completion webhooks: signatures and delivery.

A task submitted with ``callback_url`` gets a webhook when it reaches COMPLETED,
FAILED or CANCELLED; a batch with one gets ``batch.completed`` once, when all of its
tasks are final (migration 0009).  The webhook is itself a task (``tasklane.webhook``),
created in the same statement as the final transition, so it is never lost and
is retried with backoff and dead-lettered like any other task.

Signature (verify it before trusting a callback)::

    Tasklane-Timestamp: 1767225600
    Tasklane-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>

Recompute the HMAC over the raw body with your tenant's secret
(``GET /api/v1/webhook-secret``), compare in constant time, and refuse
timestamps older than five minutes (replays).

Delivery goes through ``outbound_http`` (its address guard, resolved once per
call) and never follows redirects: a 3xx answer is a refusal, since following it
would send the signed event somewhere the tenant did not name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from chalicelib.adapters.outbound_http import AddressGuard, client
from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.core.urls import check_callback_url

SIGNATURE_HEADER = "Tasklane-Signature"
TIMESTAMP_HEADER = "Tasklane-Timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Tasklane-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: int = 300) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def deliver(
    payload: dict[str, Any],
    secret: str,
    *,
    timeout: float,
    allow_private: bool,
    delivery_id: str,
    guard: AddressGuard | None = None,
    trace: Mapping[str, str] | None = None,
) -> int:
    """POST the event; returns the status.  2xx is success; 408, 429, 5xx and network
    errors are retryable; any other answer (3xx included) is permanent.  ``trace``: the
    task's trace headers (the webhook carries on the trace of the task it reports)."""
    url = payload.get("url")
    if not isinstance(url, str):
        raise PermanentError("webhook payload has no url")
    check_callback_url(url, allow_private=allow_private)  # a PayloadError is permanent
    # A batch's completion reports the batch; every other event reports its task.
    subject = "batch" if "batch" in payload else "task"
    # The delivery id rides in the signed body too: a receiver deduplicating on the
    # Tasklane-Delivery header alone could be fed a replay with another id in it.
    event = {"event": payload.get("event"), "delivery": delivery_id, subject: payload.get(subject)}
    body = json.dumps(event, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Tasklane-Webhook/1",
        "Tasklane-Event": str(payload.get("event")),
        "Tasklane-Delivery": delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    guard = guard or AddressGuard.from_env(allow_private=allow_private)
    try:
        exchange = client().request("POST", url, guard=guard, headers=headers, body=body, timeout=timeout, trace=trace)
    except RetryableError as exc:
        raise RetryableError(f"webhook to {url} failed: {exc}") from None
    status = exchange.status
    exchange.discard()
    if 200 <= status < 300:
        return status
    if status in (408, 429) or status >= 500:
        raise RetryableError(f"webhook receiver answered {status}")
    raise PermanentError(f"webhook receiver refused the call with {status} (redirects are not followed)")
