"""The driver's errors the store turns into Tasklane errors: ``StoreError`` (503) when
PostgreSQL cannot be reached, ``StoreConflict`` (503) when it rolled a transaction back
to end a conflict with another, ``ValidationError`` (400) or ``ConflictError`` (409) for
a value it refused (``Store.connection``); and ``retry_conflicts``, which runs again
what PostgreSQL rolled back that way."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from chalicelib.core.errors import ConflictError, StoreConflict, StoreError, ValidationError

T = TypeVar("T")

TRANSLATED = (
    PoolTimeout,
    psycopg.OperationalError,
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.InterfaceError,
)

# Runs of one statement or transaction that PostgreSQL may roll back to end a deadlock
# before the caller gets the StoreConflict.  Each run waits for the lock again, up to
# deadlock_timeout (1 s by default) before the cycle is found, so few.
CONFLICT_ATTEMPTS = 3


def translated(exc: BaseException) -> Exception:
    """The Tasklane error for one of ``TRANSLATED``."""
    if isinstance(exc, PoolTimeout):
        return StoreError("PostgreSQL is unreachable (no connection available); retry later")
    if isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40"):  # 40001, 40P01: rolled back
        return StoreConflict(
            f"PostgreSQL rolled the transaction back to end a conflict with a concurrent one ({first_line(exc)});"
            " nothing was written; retry"
        )
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"PostgreSQL is unreachable: {first_line(exc)}")
    if isinstance(exc, psycopg.errors.DataError):
        return ValidationError(f"invalid value: {first_line(exc)}")
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return ConflictError(f"already exists: {first_line(exc)}")
    if isinstance(exc, psycopg.errors.IntegrityError):
        return ValidationError(f"rejected by the database: {first_line(exc)}")
    return StoreError(f"PostgreSQL connection failed: {first_line(exc)}")


def retry_conflicts(work: Callable[[], T]) -> T:
    """``work`` (one autocommit statement, or a transaction of its own that changes
    nothing outside PostgreSQL), run again when PostgreSQL rolled it back to end a
    deadlock or a serialization failure: all of it was undone, and by the next run the
    transaction it conflicted with has usually ended.  Nothing here may be called
    inside an open transaction, which the rollback ended."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return work()
        except StoreConflict:
            if attempt >= CONFLICT_ATTEMPTS:
                raise
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
