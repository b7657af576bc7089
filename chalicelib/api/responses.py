"""HTTP plumbing shared by the routes: JSON responses, error bodies, request parsing.

Every error a client can cause leaves as ``{"error": {"code", "message"}}`` with a
4xx; an unexpected exception is logged with its traceback and answered with a
generic 500 that leaks nothing.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from typing import Any

from chalice.app import Response

from chalicelib.core.errors import NotFoundError, TasklaneError, ValidationError
from chalicelib.observability.log import logger

JSON_HEADERS = {"Content-Type": "application/json"}

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
        body=json.dumps(body, separators=(",", ":"), default=str),
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


def handle_errors(fn: Callable[..., Response]) -> Callable[..., Response]:
    """Map ``TasklaneError`` to its status and JSON body; anything else to a 500."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return fn(*args, **kwargs)
        except TasklaneError as exc:
            return tasklane_error_response(exc)
        except Exception:  # noqa: BLE001 - the last line of defence: never a raw 500
            logger.exception("unhandled error")
            return error_response(500, "internal_error", "internal error; it has been logged")

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


def uuid_param(raw: str, what: str) -> str:
    """A path id; a malformed one is simply not found (404), like an unknown one."""
    try:
        return str(uuid.UUID(raw))
    except (ValueError, AttributeError, TypeError):
        raise NotFoundError(f"no {what} {raw!r}") from None


def task_id_param(raw: str) -> str:
    return uuid_param(raw, "task")


def int_query(params: dict[str, str] | None, name: str, default: int, lo: int, hi: int) -> int:
    raw = (params or {}).get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be an integer", details={"field": name}) from None
    if not lo <= value <= hi:
        raise ValidationError(f"{name} must be from {lo} to {hi}", details={"field": name})
    return value
