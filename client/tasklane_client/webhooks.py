"""Verify Tasklane's completion webhooks.

The server signs every call with the tenant's secret::

    Tasklane-Timestamp: 1767225600
    Tasklane-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>

:func:`verify_webhook` recomputes the HMAC over the *raw* body (verify before
parsing: re-serialised JSON does not match), compares in constant time and refuses
timestamps further than ``tolerance`` seconds from now (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping

from tasklane_client.errors import WebhookVerificationError
from tasklane_client.models import WebhookEvent

SIGNATURE_HEADER = "Tasklane-Signature"
TIMESTAMP_HEADER = "Tasklane-Timestamp"
DELIVERY_HEADER = "Tasklane-Delivery"
DEFAULT_TOLERANCE = 300


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Tasklane-Signature`` value the server sends for ``body`` at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify_webhook(
    secret: str | Iterable[str],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> WebhookEvent:
    """Check a webhook's signature and age, and return its parsed event.

    ``secret`` may be several secrets (the current one and the one before a rotation);
    any match is accepted.  ``headers`` is looked up case-insensitively.  ``body`` must
    be the raw request body.  Raises :class:`WebhookVerificationError` when a header is
    missing, the timestamp is further than ``tolerance`` seconds from ``now`` (default:
    the current time), the signature matches no secret, or the body is not the JSON
    the server sends.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise WebhookVerificationError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise WebhookVerificationError(
            f"timestamp is {abs(current - ts):.0f} s away from now (tolerance {tolerance:g} s): refused as a replay"
        )
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise WebhookVerificationError("no secret to verify with")
    # Compare against every secret (no early exit) so timing does not reveal which matched.
    matched = False
    for candidate in secrets:
        # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a 400).
        matched |= hmac.compare_digest(sign_webhook(candidate, ts, raw).encode(), signature.encode(errors="replace"))
    if not matched:
        raise WebhookVerificationError("signature does not match")
    try:
        data = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookVerificationError('body is not {"event": ..., "task": {...}}')
    # The signed body's delivery id; the header's only from a server that predates it.
    delivery = data.get("delivery")
    delivery_id = delivery if isinstance(delivery, str) else _header(headers, DELIVERY_HEADER)
    batch = data.get("batch")
    if isinstance(batch, dict):  # batch.completed: the batch, no task
        return WebhookEvent(str(data.get("event")), {}, ts, delivery_id, batch)
    if not isinstance(data.get("task"), dict):
        raise WebhookVerificationError('body is not {"event": ..., "task": {...}} (or "batch": {...})')
    return WebhookEvent(event=str(data.get("event")), task=data["task"], timestamp=ts, delivery_id=delivery_id)
