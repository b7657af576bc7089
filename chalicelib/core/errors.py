"""Tasklane's exceptions: one root, subclasses by what the caller must do.

API-facing errors carry an HTTP status and a stable machine-readable ``code``;
the API layer turns them into ``{"error": {"code": ..., "message": ...}}``.
Executor-facing errors (``RetryableError``/``PermanentError``) tell the drainer
whether a failed attempt may be retried.
"""

from __future__ import annotations

from typing import Any


class TasklaneError(Exception):
    """Root of every error Tasklane raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


# --- errors a client causes (4xx) -------------------------------------------------


class ValidationError(TasklaneError):
    """The request is malformed; fix the named field and send it again."""

    status = 400
    code = "validation_error"


class UnauthorizedError(TasklaneError):
    """No usable API key: send a valid, enabled key in ``X-API-Key``."""

    status = 401
    code = "unauthorized"


class NotFoundError(TasklaneError):
    """No such resource for this tenant (never says whether another tenant has it)."""

    status = 404
    code = "not_found"


class ConflictError(TasklaneError):
    """The resource is in a state that forbids the request (e.g. cancel a finished task)."""

    status = 409
    code = "conflict"


class PayloadTooLargeError(TasklaneError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(TasklaneError):
    status = 415
    code = "unsupported_media_type"


class RateLimitedError(TasklaneError):
    status = 429
    code = "rate_limited"


class QuotaExceededError(TasklaneError):
    """The tenant's max_queued quota: nothing was accepted (README "Fair share between tenants")."""

    status = 429
    code = "tenant_quota_exceeded"


# --- infrastructure (5xx the client may retry) ------------------------------------


class UnavailableError(TasklaneError):
    """A dependency (PostgreSQL, Redis) cannot be reached; retry later."""

    status = 503
    code = "unavailable"


class StoreError(UnavailableError):
    """PostgreSQL failed; nothing was accepted that was not persisted."""

    code = "database_unavailable"


class StoreConflict(StoreError):
    """PostgreSQL rolled a transaction back to end a conflict with a concurrent one (a
    deadlock, a serialization failure): nothing of it was written, and running it again
    is safe; the store does, a few times, before a caller sees this.  Not an outage: a
    code of its own, and a client may retry at once."""

    code = "database_conflict"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class QueueError(UnavailableError):
    """Redis failed; PostgreSQL still holds every task and the sweeper re-enqueues.

    The only way a Redis failure is reported: the adapters in ``adapters/redis``
    translate every redis-py error (connection refused, timeout, script error) into
    this at their boundary (``client.translate``).  Callers catch ``QueueError`` (or
    ``UnavailableError`` where PostgreSQL may fail too), never a redis-py exception."""

    code = "queue_unavailable"


class PartialPushError(QueueError):
    """A push whose entries were split over several masters (queue partitions on a
    Redis Cluster) reached some of them: ``unpushed`` of its entries did not go in."""

    def __init__(self, unpushed: int, total: int, cause: QueueError) -> None:
        super().__init__(f"{unpushed} of {total} entries not pushed: {cause}")
        self.unpushed = unpushed


class LeaseLostError(TasklaneError):
    """A worker's lease was taken over; its outcome was not recorded (fencing)."""

    code = "lease_lost"


# --- raised by executors ----------------------------------------------------------


class ExecutionError(Exception):
    """Base for errors executors raise to steer retries."""


class RetryableError(ExecutionError):
    """A transient failure (network, throttling, 5xx): retry with backoff.

    ``retry_after`` (seconds) asks for that delay instead of the backoff, e.g. from
    an HTTP ``Retry-After`` answer; the retry policy bounds it."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ExecutionError):
    """Retrying cannot help (bad input, 4xx): dead-letter at once."""


class PayloadError(PermanentError):
    """The task's payload is invalid for its executor."""


class TaskCancelled(ExecutionError):
    """Raised by an executor that saw ``ctx.cancel_requested`` and stopped early."""


# The error_type of the event a snooze writes (not a failure: see ``Snooze``).
SNOOZED = "Snoozed"
# The error_type of a waiting task finalised because its ``expires_at`` passed.
EXPIRED = "Expired"


class Snooze(ExecutionError):
    """Not now: run this task again in ``seconds`` without spending an attempt.

    The task goes back to PENDING (due after ``seconds``, bounded like a
    ``retry_after``), its attempt is given back and ``snoozes`` counts up.  A task may
    snooze ``TASKLANE_MAX_SNOOZES`` times; beyond that a snooze is an ordinary retryable
    failure (it spends an attempt), so a task cannot wait forever unseen."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"snoozed for {seconds:g} s")
        self.seconds = seconds
        self.reason = reason
