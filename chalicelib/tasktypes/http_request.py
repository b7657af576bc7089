"""``http-request``: calls a URL (urllib3) with a timeout; once per task.

Outcome classes: a 2xx/3xx answer completes the task with the status, a few
headers and the body (64 KiB at most); 5xx, 408, 429, timeouts and connection
errors are retryable; any other 4xx is permanent.  Only ``http``/``https`` URLs
are accepted, and hosts that resolve to link-local addresses (the instance and
container metadata endpoints) are refused.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import socket
import threading
from typing import Any

from chalicelib.adapters.webhooks import CALLBACK_URL_PATTERN
from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.tasktypes import TaskContext, registry, require
from chalicelib.tasktypes.aws import check_keys, once_per_task

# No \s or \S: Python's and JSON Schema's (ECMA) regex dialects disagree on what
# whitespace is, and this pattern is published in /openapi.json too.  The same URL
# grammar as completion webhooks: a host, an optional valid port, RFC 3986 characters.
URL_PATTERN = CALLBACK_URL_PATTERN
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_URL = 2048
MAX_HEADERS = 50
MAX_HEADER_VALUE = 8192
MAX_BODY = 200_000
MAX_TIMEOUT = 300
DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 65536
RETRYABLE_4XX = {408, 425, 429}
KEPT_HEADERS = ("content-type", "content-length", "etag", "last-modified", "location", "retry-after")
FIELDS = {"url", "method", "headers", "json", "body", "timeout_seconds"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Needs url (http or https). 5xx, 408, 425, 429, timeouts and connection errors retry; "
    "other 4xx fail permanently. json and body are exclusive.",
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

_pool: Any = None
_pool_lock = threading.Lock()


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


def _pool_manager() -> Any:
    global _pool
    with _pool_lock:
        if _pool is None:
            import urllib3

            _pool = urllib3.PoolManager(num_pools=20, maxsize=8, retries=False)
        return _pool


def _refuse_link_local(host: str, port: int) -> None:
    """Metadata endpoints (169.254.169.254, 169.254.170.2, fd00:ec2::254) hand out credentials."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise RetryableError(f"cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address.is_link_local or address in ipaddress.ip_network("fd00:ec2::/64"):
            raise PermanentError(f"refusing to call {host!r}: it resolves to link-local address {address}")


def _call(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    import urllib3
    from urllib3.exceptions import HTTPError, LocationParseError, ProtocolError, TimeoutError

    url = payload["url"].strip()
    try:
        parsed = urllib3.util.parse_url(url)
    except LocationParseError as exc:
        raise PermanentError(f"invalid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise PermanentError("only http:// and https:// URLs with a host are allowed")
    _refuse_link_local(parsed.host.strip("[]"), parsed.port or (443 if parsed.scheme == "https" else 80))

    method = payload.get("method", "GET")
    headers = {str(k): v for k, v in payload.get("headers", {}).items()}
    body: bytes | None = None
    if "json" in payload:
        body = json.dumps(payload["json"], separators=(",", ":")).encode()
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    elif "body" in payload:
        body = payload["body"].encode()
    limit = float(payload.get("timeout_seconds", DEFAULT_TIMEOUT))
    limit = max(min(limit, ctx.remaining_seconds()), 0.1)
    timeout = urllib3.Timeout(connect=min(limit, 10.0), read=limit)
    try:
        response = _pool_manager().request(
            method,
            url,
            body=body,
            headers=headers,
            timeout=timeout,
            redirect=method in ("GET", "HEAD"),
            preload_content=False,
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=5, raise_on_redirect=False, status=0),
        )
    except (ValueError, LocationParseError) as exc:  # e.g. a header with a newline
        raise PermanentError(f"invalid request: {exc}") from exc
    except TimeoutError as exc:
        raise RetryableError(f"timed out after {limit:g} s: {exc}") from exc
    except (ProtocolError, HTTPError, OSError) as exc:
        raise RetryableError(f"request failed: {exc}") from exc
    try:
        data = response.read(MAX_RESPONSE_BYTES + 1, decode_content=True) or b""
    except (HTTPError, OSError) as exc:
        raise RetryableError(f"reading the response failed: {exc}") from exc
    finally:
        response.release_conn()
    status = int(response.status)
    text = data[:MAX_RESPONSE_BYTES].decode("utf-8", "replace")
    if status >= 500 or status in RETRYABLE_4XX:
        raise RetryableError(f"{method} {url} answered {status}: {text[:200]}")
    if status >= 400:
        raise PermanentError(f"{method} {url} answered {status}: {text[:200]}")
    result: dict[str, Any] = {
        "status": status,
        "headers": {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers},
        "body": text,
        "truncated": len(data) > MAX_RESPONSE_BYTES,
    }
    if "json" in (response.headers.get("content-type") or "") and not result["truncated"]:
        try:
            result["json"] = json.loads(text)
        except ValueError:
            pass
    return result


@registry.task("http-request", validate=validate, payload_schema=SCHEMA)
def http_request(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Calls an http(s) URL with a timeout; 5xx/timeouts retry, 4xx fail; once per task."""
    return once_per_task("http-request", ctx, payload, lambda: _call(payload, ctx))
