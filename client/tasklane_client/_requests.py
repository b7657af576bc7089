"""Pieces of a request and of an error answer, shared by the client's core and its
errors: parameter formatting, idempotency keys, ``Retry-After`` and the typed
exception for an error response.  No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from tasklane_client.errors import ApiError, error_class
from tasklane_client.models import NewTask, Priority, TaskStatus


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed exception for an error answer (``{"error": {"code", "message", "details"}}``;
    anything else, e.g. a proxy's HTML page, is mapped by status)."""
    code: str | None = None
    message = ""
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err["code"]) if err.get("code") is not None else None
        message = str(err.get("message") or "")
        details = err.get("details") if isinstance(err.get("details"), dict) else {}
    if not message:
        message = response.text[:200] or response.reason_phrase or f"HTTP {response.status_code}"
    cls = error_class(response.status_code, code)
    return cls(
        message,
        status=response.status_code,
        code=code,
        details=details,
        headers={k.lower(): v for k, v in response.headers.items()},
    )


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def _enum_value(value: TaskStatus | Priority | str | None) -> str | None:
    if isinstance(value, TaskStatus | Priority):
        return str(value.value)
    return value


def _params(**values: str | int | None) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def _seg(value: str) -> str:
    """``value`` as one path segment.  Empty, "." and ".." would name another resource
    (``/api/v1/tasks/`` is the task list; dot segments are resolved away), so they are a
    ``ValueError`` before any request, like the client's other argument errors."""
    text = str(value)
    if text in ("", ".", ".."):
        raise ValueError(f"{text!r} is not an id or a name")
    return quote(text, safe="")


def new_idempotency_key() -> str:
    """A fresh idempotency key (uuid4)."""
    return str(uuid.uuid4())


def _batch_body(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The ``batch`` object of a batch submit; ``on_complete`` may be a ``NewTask``."""
    body = dict(batch)
    follow_up = body.get("on_complete")
    if isinstance(follow_up, NewTask):
        body["on_complete"] = follow_up.to_body()
    return body
