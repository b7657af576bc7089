"""How an attempt's end becomes the ``Outcome`` the store records."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.core.errors import SNOOZED, RetryableError, Snooze, TaskCancelled
from chalicelib.core.jsonbody import storable_text, unstorable_text
from chalicelib.core.model import Claimed, Outcome, Status
from chalicelib.core.retry import RetryPolicy, describe, is_permanent
from chalicelib.execution.window import HandedBack

# json.dumps with options builds an encoder per call; one built once encodes the same.
# No NaN or Infinity: jsonb refuses them, and with them the finish of the whole batch.
_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _dead(task_id: str, token: str, error_type: str, message: str) -> Outcome:
    """FAILED at once, without a retry (what a retry would meet again), the message
    bounded and storable."""
    return Outcome(task_id, token, Status.FAILED, error=storable_text(message[:2000]), error_type=error_type)


def failure_outcome(
    policy: RetryPolicy, task_id: str, token: str, attempts: int, max_retries: int, exc: BaseException
) -> Outcome:
    """The outcome of a failed attempt: a retry after the policy's delay, or FAILED."""
    message, kind = describe(exc)
    status = policy.next_status(attempts, max_retries, is_permanent(exc))
    delay = policy.delay(attempts, exc) if status is Status.PENDING else None
    return Outcome(task_id, token, status, error=message, error_type=kind, delay_seconds=delay)


class Outcomes:
    """Outcome builder for one runner: results are JSON-encoded and size-checked here."""

    def __init__(self, retry: RetryPolicy, max_result_bytes: int) -> None:
        self.retry = retry
        self.max_result_bytes = max_result_bytes

    def ended(self, task: Claimed, token: str, value: Any, exc: BaseException | None) -> Outcome:
        """The attempt returned ``value`` or raised ``exc``.  Never raises: both are the
        task's, and an error here would lose the outcomes of the task's whole batch
        (they are collected together), whose siblings would then all run again."""
        try:
            return self._ended(task, token, value, exc)
        except Exception as err:  # noqa: BLE001 - see above; the outcome says what went wrong
            message, kind = describe(err)
            return _dead(
                task.id,
                token,
                "OutcomeError",
                f"the attempt's end could not be turned into an outcome: {kind}: {message}",
            )

    def _ended(self, task: Claimed, token: str, value: Any, exc: BaseException | None) -> Outcome:
        if exc is None:
            return self._completed(task, token, value)
        if isinstance(exc, TaskCancelled):
            message, kind = describe(exc)
            return Outcome(task.id, token, Status.CANCELLED, error=message, error_type=kind)
        if isinstance(exc, Snooze):
            return self._snoozed(task, token, exc)
        if isinstance(exc, HandedBack):
            return self.handed_back(task, token, exc.left)
        return self.failed(task, token, exc)

    def _snoozed(self, task: Claimed, token: str, snooze: Snooze) -> Outcome:
        """Back to PENDING with the attempt given back; past the policy's bound, an
        ordinary retryable failure (it spends an attempt and shows in the errors)."""
        if task.snoozes >= self.retry.max_snoozes:
            limit = self.retry.max_snoozes
            return self.failed(task, token, RetryableError(f"snoozed more than {limit} times; counted as a failure"))
        delay = self.retry.snooze_delay(snooze.seconds)
        message = f"snoozed for {delay:g} s" + (f": {snooze.reason}" if snooze.reason else "")
        return Outcome(
            task.id,
            token,
            Status.PENDING,
            error=storable_text(message[:2000]),
            error_type=SNOOZED,
            delay_seconds=delay,
            snooze=True,
        )

    def failed(self, task: Claimed, token: str, exc: BaseException) -> Outcome:
        return failure_outcome(self.retry, task.id, token, task.attempts, task.max_retries, exc)

    def timed_out(self, task: Claimed, token: str) -> Outcome:
        return self.failed(task, token, TimeoutError(f"attempt exceeded {task.timeout_seconds:g} s"))

    def handed_back(self, task: Claimed, token: str, left: float) -> Outcome:
        """Not started: the drain invocation ends before the attempt's timeout could
        (``execution/window.py``).  Given back like a snooze (no attempt spent), due at
        once: this invocation claims no more, and another one, with the time, runs it."""
        return Outcome(
            task.id,
            token,
            Status.PENDING,
            error=f"handed back unstarted: the drain invocation had {max(left, 0):.1f} s left"
            f" and the attempt may take {task.timeout_seconds:g} s",
            error_type=SNOOZED,
            delay_seconds=0.0,
            snooze=True,
        )

    def unknown_task(self, task: Claimed, token: str) -> Outcome:
        return _dead(task.id, token, "UnknownTaskName", f"no executor is registered for task name {task.name!r}")

    def _completed(self, task: Claimed, token: str, value: Any) -> Outcome:
        try:
            result_json = _compact(value)
        except Exception as err:  # noqa: BLE001 - whatever the value raises (RecursionError when deep)
            return _dead(task.id, token, "ResultError", f"result is not JSON: {describe(err)[0]}")
        # ASCII JSON: a NUL or a surrogate (of an emoji, or a lone one) is a \u escape.
        if "\\u0000" in result_json or "\\ud" in result_json:
            unstorable = unstorable_text(json.loads(result_json))
            if unstorable is not None:
                return _dead(task.id, token, "ResultError", f"result cannot be stored: {unstorable}")
        if len(result_json) > self.max_result_bytes:
            return _dead(
                task.id,
                token,
                "ResultTooLarge",
                f"result is {len(result_json)} bytes; the limit is {self.max_result_bytes}"
                " (store large outputs elsewhere, e.g. S3, and return a reference)",
            )
        return Outcome(task.id, token, Status.COMPLETED, result_json=result_json)


def refused_outcome(outcome: Outcome, refusal: Exception) -> Outcome:
    """What is recorded instead of ``outcome`` when PostgreSQL refuses it (a value none
    of the checks above caught): the task fails, with the refusal as its error, rather
    than staying PROCESSING until its lease expires and running again, to the same end."""
    message, _ = describe(refusal)
    return _dead(
        outcome.id,
        outcome.token,
        "OutcomeRefused",
        f"the outcome ({outcome.status.value}) could not be stored: {message}",
    )
