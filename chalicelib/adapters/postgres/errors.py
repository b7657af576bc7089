"""The driver's errors the store turns into Tasklane errors: ``StoreError`` (503) when
PostgreSQL cannot be reached, ``ValidationError`` (400) or ``ConflictError`` (409) for
a value it refused (``Store.connection``)."""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

from chalicelib.core.errors import ConflictError, StoreError, ValidationError

TRANSLATED = (
    PoolTimeout,
    psycopg.OperationalError,
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.InterfaceError,
)


def translated(exc: BaseException) -> Exception:
    """The Tasklane error for one of ``TRANSLATED``."""
    if isinstance(exc, PoolTimeout):
        return StoreError("PostgreSQL is unreachable (no connection available); retry later")
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"PostgreSQL is unreachable: {first_line(exc)}")
    if isinstance(exc, psycopg.errors.DataError):
        return ValidationError(f"invalid value: {first_line(exc)}")
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return ConflictError(f"already exists: {first_line(exc)}")
    if isinstance(exc, psycopg.errors.IntegrityError):
        return ValidationError(f"rejected by the database: {first_line(exc)}")
    return StoreError(f"PostgreSQL connection failed: {first_line(exc)}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
