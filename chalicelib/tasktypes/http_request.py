"""``http-request``: calls a URL (urllib3) with a timeout; once per task.

Outcome classes: a 2xx answer (or a 3xx to a method other than GET/HEAD) completes
the task with the status, a few headers and the body (64 KiB at most); 5xx, 408,
425, 429, timeouts and connection errors are retryable (429 and 503 after the
server's ``Retry-After``, when given, up to an hour); any other 4xx is permanent.

Redirects: GET and HEAD follow up to 5 (301, 302, 303, 307, 308), each hop
resolved once and checked by the outbound address guard before it is connected to
(``chalicelib.adapters.outbound_http``); one more is a permanent failure.  Other
methods never follow: the 3xx is the result, with its ``location`` header.
Only ``http``/``https`` URLs are accepted; link-local and metadata addresses are
always refused, private ranges unless ``TASKLANE_HTTP_REQUEST_ALLOW_PRIVATE``.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from chalicelib.adapters.outbound_http import AddressGuard, Exchange, client
from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.core.urls import HTTP_URL_PATTERN
from chalicelib.tasktypes.aws import check_keys, once_per_task
from chalicelib.tasktypes.catalog import registry, require
from chalicelib.tasktypes.context import TaskContext

# No \s or \S: Python's and JSON Schema's (ECMA) regex dialects disagree on what
# whitespace is, and this pattern is published in /openapi.json too.  The same URL
# grammar as completion webhooks: a host, an optional valid port, RFC 3986 characters.
URL_PATTERN = HTTP_URL_PATTERN
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_URL = 2048
MAX_HEADERS = 50
MAX_HEADER_VALUE = 8192
MAX_BODY = 200_000
MAX_TIMEOUT = 300
DEFAULT_TIMEOUT = 10.0
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 3600
MAX_RESPONSE_BYTES = 65536
RETRYABLE_4XX = {408, 425, 429}
KEPT_HEADERS = ("content-type", "content-length", "etag", "last-modified", "location", "retry-after")
FIELDS = {"url", "method", "headers", "json", "body", "timeout_seconds"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Needs url (http or https). 5xx, 408, 425, 429, timeouts and connection errors retry "
    "(429/503 after Retry-After); other 4xx fail permanently. GET/HEAD follow up to 5 redirects, each "
    "checked like the first URL; other methods return the 3xx. json and body are exclusive.",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "pattern": URL_PATTERN, "maxLength": MAX_URL},
        "method": {"enum": METHODS},
        "headers": {
            "type": "object",
            "maxProperties": MAX_HEADERS,
            "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE},
        },
        "json": {},
        "body": {"type": "string", "maxLength": MAX_BODY},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT},
    },
    "not": {"required": ["json", "body"]},
    "patternProperties": {"^_": {}},
    "additionalProperties": False,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(payload: Any) -> None:
    check_keys(payload, FIELDS, "http-request")
    url = payload.get("url")
    require(
        isinstance(url, str) and len(url) <= MAX_URL and re.search(URL_PATTERN, url) is not None,
        'http-request: "url" must be an http:// or https:// URL',
    )
    if "method" in payload:
        require(payload["method"] in METHODS, f'http-request: "method" is one of {", ".join(METHODS)}')
    if "headers" in payload:
        headers = payload["headers"]
        require(
            isinstance(headers, dict)
            and len(headers) <= MAX_HEADERS
            and all(isinstance(v, str) and len(v) <= MAX_HEADER_VALUE for v in headers.values()),
            f'http-request: "headers" is an object of at most {MAX_HEADERS} string values',
        )
    if "body" in payload:
        body = payload["body"]
        require(isinstance(body, str) and len(body) <= MAX_BODY, 'http-request: "body" must be a string')
    require(not ("json" in payload and "body" in payload), 'http-request: send "json" or "body", not both')
    if "timeout_seconds" in payload:
        t = payload["timeout_seconds"]
        require(
            _is_number(t) and 0 < t <= MAX_TIMEOUT,
            f'http-request: "timeout_seconds" must be a number in (0, {MAX_TIMEOUT}]',
        )


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` value (delay-seconds or an HTTP date) as seconds from now, capped;
    None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(min(int(text), MAX_RETRY_AFTER))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    delta = when.timestamp() - (time.time() if now is None else now)
    return float(min(max(delta, 0.0), MAX_RETRY_AFTER))


def _request_parts(payload: dict[str, Any]) -> tuple[str, dict[str, str], bytes | None]:
    method = payload.get("method", "GET")
    headers = {str(k): v for k, v in payload.get("headers", {}).items()}
    body: bytes | None = None
    if "json" in payload:
        body = json.dumps(payload["json"], separators=(",", ":")).encode()
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    elif "body" in payload:
        body = payload["body"].encode()
    return method, headers, body


def _result(exchange: Exchange, method: str) -> dict[str, Any]:
    """Classify the final answer: a result, or the error the retry policy acts on."""
    response = exchange.response
    where = f"{method} {exchange.url}"
    data = exchange.read_body(MAX_RESPONSE_BYTES, where)
    status = exchange.status
    text = data[:MAX_RESPONSE_BYTES].decode("utf-8", "replace")
    if status >= 500 or status in RETRYABLE_4XX:
        wait = retry_after_seconds(response.headers.get("retry-after")) if status in (429, 503) else None
        raise RetryableError(f"{where} answered {status}: {text[:200]}", retry_after=wait)
    if status >= 400:
        raise PermanentError(f"{where} answered {status}: {text[:200]}")
    result: dict[str, Any] = {
        "status": status,
        "headers": {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers},
        "body": text,
        "truncated": len(data) > MAX_RESPONSE_BYTES,
    }
    if exchange.redirects:
        result["url"] = exchange.url
    if "json" in (response.headers.get("content-type") or "") and not result["truncated"]:
        try:
            result["json"] = json.loads(text)
        except ValueError:
            pass
    return result


def call(payload: dict[str, Any], ctx: TaskContext, guard: AddressGuard | None = None) -> dict[str, Any]:
    """One attempt of the request (without the once-per-task record)."""
    method, headers, body = _request_parts(payload)
    if guard is None:
        allow_private = ctx.ports.settings_or_env().http_request_allow_private
        guard = AddressGuard.from_env(allow_private=allow_private)
    limit = float(payload.get("timeout_seconds", DEFAULT_TIMEOUT))
    limit = max(min(limit, ctx.remaining_seconds()), 0.1)
    exchange = client().request(
        method,
        payload["url"].strip(),
        guard=guard,
        headers=headers,
        body=body,
        timeout=limit,
        max_redirects=MAX_REDIRECTS if method in ("GET", "HEAD") else 0,
        trace=ctx.trace_headers(),
    )
    return _result(exchange, method)


@registry.task("http-request", validate=validate, payload_schema=SCHEMA)
def http_request(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Calls an http(s) URL with a timeout; 5xx/timeouts retry, 4xx fail; once per task."""
    return once_per_task("http-request", ctx, payload, lambda: call(payload, ctx))
