"""The client's exceptions: one root, :class:`TasklaneError`, and a subclass per thing
the caller may want to catch.

Errors the API answers are :class:`ApiError` subclasses chosen from the body's
``error.code`` (falling back on the HTTP status); they carry ``status``, ``code``,
``message`` and ``details`` exactly as the server sent them.
"""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasklane_client.models import Task


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(seconds, 0.0)  # NaN: no delay at all (sleep(nan) fails)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class TasklaneError(Exception):
    """Root of every error this client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- errors the API answered ---------------------------------------------------------


class ApiError(TasklaneError):
    """The API answered with an error (``{"error": {"code", "message", "details"}}``)."""

    status: int = 0
    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}
        self.headers: dict[str, str] = headers or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class ClientError(ApiError):
    """A 4xx: the request must change before it can succeed."""


class ValidationError(ClientError):
    """400: the request is malformed; ``message`` (and ``details``) name the field."""

    status = 400
    code = "validation_error"


class UnauthorizedError(ClientError):
    """401: missing, unknown, disabled or expired API key."""

    status = 401
    code = "unauthorized"


class ForbiddenError(ClientError):
    """403: the key may not do this."""

    status = 403
    code = "forbidden"


class NotFoundError(ClientError):
    """404: no such task or schedule for this tenant."""

    status = 404
    code = "not_found"


class ConflictError(ClientError):
    """409: the resource's state forbids the request (cancel a finished task, redrive a
    task that is not FAILED, reuse an idempotency key with another body)."""

    status = 409
    code = "conflict"


class PayloadTooLargeError(ClientError):
    """413: the request body exceeds the server's limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ClientError):
    """415: the body was not sent as JSON."""

    status = 415
    code = "unsupported_media_type"


class RateLimitedError(ClientError):
    """429: over the key's rate limit; ``retry_after`` says for how long (seconds)."""

    status = 429
    code = "rate_limited"

    @property
    def retry_after(self) -> float | None:
        """The ``Retry-After`` header in seconds, when the server sent one."""
        return parse_retry_after(self.headers.get("retry-after"))


class QuotaExceededError(RateLimitedError):
    """429: the tenant's queue quota (max_queued); nothing of the request was accepted."""

    code = "tenant_quota_exceeded"


class ServerError(ApiError):
    """A 5xx the client could not recover from by retrying."""

    status = 500
    code = "internal_error"


class UnavailableError(ServerError):
    """503: PostgreSQL (or another dependency) is unreachable; nothing was accepted."""

    status = 503
    code = "unavailable"


# --- errors without an API answer -----------------------------------------------------


class NetworkError(TasklaneError):
    """The request could not be completed (connection refused or reset, timeout) even
    after the configured retries.  The original ``httpx`` exception is ``__cause__``."""


class TaskError(TasklaneError):
    """Base for what :meth:`Client.wait` raises about the task itself."""

    def __init__(self, message: str, task: Task) -> None:
        super().__init__(message)
        self.task = task


class TaskFailedError(TaskError):
    """The task ended FAILED (dead-lettered).  ``error`` and ``error_type`` are its last
    error; ``task.errors`` lists every failed attempt when known."""

    def __init__(self, task: Task) -> None:
        self.error = task.last_error
        self.error_type = task.last_error_type
        super().__init__(f"task {task.id} ({task.name}) failed: {task.last_error_type}: {task.last_error}", task)


class TaskCancelledError(TaskError):
    """The task ended CANCELLED."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"task {task.id} ({task.name}) was cancelled", task)


class WaitTimeoutError(TaskError, TimeoutError):
    """The task did not finish within :meth:`Client.wait`'s ``timeout``; ``task`` is its
    last observed state."""

    def __init__(self, task: Task, timeout: float) -> None:
        super().__init__(f"task {task.id} is still {task.status.value} after {timeout:g} s", task)


class WebhookVerificationError(TasklaneError):
    """A webhook failed verification (missing headers, bad or stale signature)."""


_BY_CODE: dict[str, type[ApiError]] = {
    "validation_error": ValidationError,
    "unauthorized": UnauthorizedError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "payload_too_large": PayloadTooLargeError,
    "unsupported_media_type": UnsupportedMediaTypeError,
    "rate_limited": RateLimitedError,
    "tenant_quota_exceeded": QuotaExceededError,
    "unavailable": UnavailableError,
    "database_unavailable": UnavailableError,
    "queue_unavailable": UnavailableError,
    "database_conflict": UnavailableError,
    "internal_error": ServerError,
}

_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    429: RateLimitedError,
    503: UnavailableError,
}


def error_class(status: int, code: str | None) -> type[ApiError]:
    """The exception class for an error answer: by ``code`` first, else by status."""
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ClientError
