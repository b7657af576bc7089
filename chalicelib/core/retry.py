"""Retry policy: classify a failed attempt and compute its backoff.  No I/O."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.core.jsonbody import storable_text
from chalicelib.core.model import Status


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``min(cap, base * 2**(attempt-1))``, shortened
    by up to ``jitter`` (a fraction) so that tasks failing together spread out
    instead of retrying in lockstep.  With base 2 s the seed schedule is 2, 4, 8 s."""

    base_seconds: float = 2.0
    max_seconds: float = 300.0
    jitter: float = 0.25
    # Bound on a delay a task type asks for (``RetryableError(retry_after=...)``): a
    # server's Retry-After is honoured even beyond ``max_seconds``, but not for days.
    max_retry_after_seconds: float = 3600.0
    # How often one task may snooze (``Snooze``); beyond it a snooze is a retryable
    # failure that spends an attempt, so a task cannot wait forever unseen.
    max_snoozes: int = 100

    def backoff(self, attempt: int, rand: random.Random | None = None) -> float:
        """Delay before the retry that follows failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)
        delay = min(self.max_seconds, self.base_seconds * (2**exponent))
        r = (rand or random).random()
        return float(delay * (1.0 - min(self.jitter, 1.0) * r))

    def snooze_delay(self, asked: float) -> float:
        """A snooze's delay, bounded like a ``retry_after``."""
        seconds = _seconds(asked)
        return float(min(max(seconds, 0.0), self.max_retry_after_seconds)) if seconds is not None else 0.0

    def delay(self, attempt: int, exc: BaseException, rand: random.Random | None = None) -> float:
        """Delay before the retry after failed attempt ``attempt``: the delay the error asks
        for (``RetryableError.retry_after``, bounded), else the backoff."""
        asked = _seconds(exc.retry_after) if isinstance(exc, RetryableError) else None
        if asked is not None:
            return float(min(max(asked, 0.0), self.max_retry_after_seconds))
        return self.backoff(attempt, rand)

    def next_status(self, attempts: int, max_retries: int, permanent: bool) -> Status:
        """PENDING (retry) while the budget lasts and the error is retryable, else FAILED.

        ``attempts`` counts executions so far; ``max_retries`` more may follow the first.
        """
        if permanent or attempts > max_retries:
            return Status.FAILED
        return Status.PENDING


def is_permanent(exc: BaseException) -> bool:
    """Permanent errors skip the retries; anything else (network, timeout, a bug) retries."""
    return isinstance(exc, PermanentError)


def describe(exc: BaseException) -> tuple[str, str]:
    """``(message, type name)`` of an exception, bounded and storable: a task's exception
    may carry a NUL or a lone surrogate, which PostgreSQL refuses (and with them the
    whole finish of its batch), or a ``__str__`` that raises."""
    kind = type(exc).__name__  # a type's name holds neither (type() refuses them)
    try:
        message = str(exc)[:2000]
    except Exception as err:  # noqa: BLE001 - the exception is the task's, and so is its __str__
        message = f"{kind} (its message could not be read: {type(err).__name__})"
    return storable_text(message or kind), kind


def _seconds(value: object) -> float | None:
    """A finite number of seconds, or None: what a task passed as ``retry_after`` or a
    snooze's seconds is not checked by anyone before (a string, NaN)."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None
