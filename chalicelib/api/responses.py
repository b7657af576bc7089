"""The API's one error boundary and its JSON responses.

Every error a client can cause leaves as ``{"error": {"code", "message"}}`` with a
4xx; an unexpected exception is logged with its traceback and answered with a
generic 500 that leaks nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from chalice.app import Response

from chalicelib.core.errors import TasklaneError
from chalicelib.observability.log import logger

JSON_HEADERS = {"Content-Type": "application/json"}
# One encoder for every response: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode

# Chalice answers some errors itself (415, 405, a body it cannot decode) with
# {"Code": ..., "Message": ...}; these map them onto our codes.
_CHALICE_CODES = {
    "BadRequestError": "validation_error",
    "BadRequest": "validation_error",
    "UnsupportedMediaType": "unsupported_media_type",
    "MethodNotAllowedError": "method_not_allowed",
    "NotFoundError": "not_found",
    "InternalServerError": "internal_error",
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body=_encode(body),
        status_code=status,
        headers={**JSON_HEADERS, **(headers or {})},
    )


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return json_response({"error": error}, status, headers)


def tasklane_error_response(exc: TasklaneError) -> Response:
    if exc.status >= 500:
        logger.warning("request failed", extra={"code": exc.code, "error": exc.message})
    return error_response(exc.status, exc.code, exc.message, exc.details or None, exc.headers or None)


def guarded(call: Callable[[], Response]) -> Response:
    """The error boundary every route runs in: ``TasklaneError`` becomes its status and
    JSON body; anything else is logged with its traceback and answered with a 500."""
    try:
        return call()
    except TasklaneError as exc:
        return tasklane_error_response(exc)
    except Exception:  # noqa: BLE001 - the last line of defence: never a raw 500
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; it has been logged")


def handle_errors(fn: Callable[..., Response]) -> Callable[..., Response]:
    """Run a route without authentication inside ``guarded`` (authenticated routes get
    it from ``access.requires_key``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        return guarded(lambda: fn(*args, **kwargs))

    return mark_guarded(wrapper)


GUARDED = "_tasklane_guarded"  # set on every view function that runs inside ``guarded``


def mark_guarded(wrapper: Callable[..., Response]) -> Callable[..., Response]:
    """Tag a route wrapper that applies ``guarded``, so a test can hold every route to it."""
    setattr(wrapper, GUARDED, True)
    return wrapper


def error_normalizer(routes: dict[str, dict[str, Any]]) -> Callable[[Any, Callable[[Any], Response]], Response]:
    """HTTP middleware: rewrite Chalice's own error bodies into Tasklane's shape, and
    give a 405 the ``Allow`` header RFC 9110 asks for."""

    def normalize(event: Any, get_response: Callable[[Any], Response]) -> Response:
        response = get_response(event)
        if response.status_code >= 400 and isinstance(response.body, dict) and "Code" in response.body:
            code = _CHALICE_CODES.get(str(response.body.get("Code")), "error")
            headers: dict[str, str] = {}
            if response.status_code == 405:
                resource = str((getattr(event, "context", None) or {}).get("resourcePath", ""))
                headers["Allow"] = ", ".join(sorted(routes.get(resource, {})))
            return error_response(response.status_code, code, str(response.body.get("Message", "")), None, headers)
        return response

    return normalize
