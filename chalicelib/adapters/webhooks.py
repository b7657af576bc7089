"""Completion webhooks: URL checks, signatures and the delivery executor.

A task submitted with ``callback_url`` gets a webhook when it reaches COMPLETED,
FAILED or CANCELLED.  The webhook is itself a task (``tasklane.webhook``),
created in the same statement as the final transition, so it is never lost and
is retried with backoff and dead-lettered like any other task.

Signature (verify it before trusting a callback)::

    Tasklane-Timestamp: 1767225600
    Tasklane-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>

Recompute the HMAC over the raw body with your tenant's secret
(``GET /api/v1/webhook-secret``), compare in constant time, and refuse
timestamps older than five minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from chalicelib.core.errors import PayloadError, PermanentError, RetryableError

WEBHOOK_TASK = "tasklane.webhook"
SIGNATURE_HEADER = "Tasklane-Signature"
TIMESTAMP_HEADER = "Tasklane-Timestamp"
MAX_URL = 2000
# What a callback URL may look like: http(s), a host name or IPv4 address, a valid
# port, and only RFC 3986 characters after it (percent-encode anything else).  The
# OpenAPI document publishes this same pattern, so clients and the API agree.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
CALLBACK_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:" + _PORT + r")?(/[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]*)?$"


def check_callback_url(url: str, *, allow_private: bool) -> None:
    """Raise ``PayloadError`` unless ``url`` is an absolute http(s) URL (and, when
    private targets are refused, resolves only to public addresses)."""
    if len(url) > MAX_URL:
        raise PayloadError(f"must be at most {MAX_URL} characters")
    if not re.fullmatch(CALLBACK_URL_PATTERN, url):
        raise PayloadError(
            "must be an http:// or https:// URL with a host, a valid port and only RFC 3986 characters"
            " (percent-encode others)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise PayloadError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise PayloadError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise PayloadError("has no host")
    if parts.username or parts.password:
        raise PayloadError("must not carry credentials; sign with the webhook secret instead")
    if not allow_private:
        _refuse_private(parts.hostname, port or (443 if parts.scheme == "https" else 80))


def _refuse_private(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise PayloadError(f"host {host!r} does not resolve: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise PayloadError(f"host {host!r} resolves to a non-public address ({address}); refused here")


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


_http: Any = None
_http_lock = threading.Lock()


def _pool() -> Any:
    """One connection pool per process (thread-safe), so warm drainers reuse connections."""
    global _http
    with _http_lock:
        if _http is None:
            import urllib3

            _http = urllib3.PoolManager(retries=False, maxsize=8)
        return _http


def deliver(payload: dict[str, Any], secret: str, *, timeout: float, allow_private: bool, delivery_id: str) -> int:
    """POST the event; returns the status.  2xx is success; 408, 429 and 5xx and network
    errors are retryable; any other 4xx is permanent (the receiver refuses it)."""
    import urllib3

    url = payload.get("url")
    if not isinstance(url, str):
        raise PermanentError("webhook payload has no url")
    check_callback_url(url, allow_private=allow_private)  # again: DNS may have changed
    body = json.dumps({"event": payload.get("event"), "task": payload.get("task")}, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Tasklane-Webhook/1",
        "Tasklane-Event": str(payload.get("event")),
        "Tasklane-Delivery": delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    try:
        response = _pool().request(
            "POST", url, body=body, headers=headers, redirect=False, timeout=urllib3.Timeout(total=timeout)
        )
    except urllib3.exceptions.HTTPError as exc:
        raise RetryableError(f"webhook to {url} failed: {exc}") from None
    status = int(response.status)
    if 200 <= status < 300:
        return status
    if status in (408, 429) or status >= 500:
        raise RetryableError(f"webhook receiver answered {status}")
    raise PermanentError(f"webhook receiver refused the call with {status}")
