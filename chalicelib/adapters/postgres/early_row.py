"""A single submit's INSERT whose row the caller reads before its commit is done.

Why: a submit is accepted at its durable commit, which waits for the WAL flush
(0.2-0.7 ms on the disks we measured), and the push that wakes a drainer used to
wait for that commit in turn.  Here the INSERT, a Flush and the Sync that commits it
go to PostgreSQL in one write (libpq's pipeline mode; the statements before a Sync
are one implicit transaction).  PostgreSQL answers the Flush with the INSERT's row at
once and then commits, so the caller pushes the id to Redis while the WAL is being
flushed, and learns whether the task is accepted from the Sync's answer.

A drainer can therefore be handed an id whose row is not committed yet, which its
claim's snapshot cannot see.  The INSERT takes a transaction-scoped advisory lock
on the id (``SUBMIT_LOCK_CLASS``, ``uuid_hash(id)``), and the claim waits on that lock
for any id that matches no row (migration 0042) before it looks again: the commit
makes the row visible, a rollback releases the lock with no row, and a claim never
runs ahead of the commit it depends on.  The commit is already on its way with the
INSERT, so the lock is held for the commit's own duration whatever the caller does
meanwhile (its push, a pause of its process).

Only the statement that takes most single submits (``insert_task_now``) goes this
way; any value libpq's text parameters cannot carry as psycopg would (a NUL, an
unencodable string) takes the ordinary path, whose errors are the ones users see.
"""

from __future__ import annotations

import re
import select
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import pq

# The advisory lock class (two-int form) of a submit's commit in flight; the claim
# waits on it (migration 0042).  tests/unit/test_advisory_locks.py keeps it unique.
SUBMIT_LOCK_CLASS = 7301955

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_STATEMENT = b"tasklane_insert_task_now"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's, for a binary timestamptz
_OK = pq.ExecStatus.TUPLES_OK
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_FATAL = pq.ExecStatus.FATAL_ERROR
_UNDEFINED_STATEMENT = "26000"
_DUPLICATE_STATEMENT = "42P05"


class Unsuitable(Exception):
    """A parameter the text protocol cannot carry as psycopg would; the caller takes
    the ordinary path."""


def numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """``%(name)s`` placeholders as ``$n`` (one number per name) and the names in order."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return _PLACEHOLDER.sub(number, sql).encode(), tuple(names)


def _text(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.isoformat()
    elif isinstance(value, bool) or not isinstance(value, str | int):
        raise Unsuitable(type(value).__name__)
    text = str(value)
    if "\x00" in text:  # libpq takes text parameters as C strings: a NUL would cut it short
        raise Unsuitable("NUL")
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise Unsuitable("encoding") from exc


class EarlyInsert:
    """``insert_task_now`` sent with its commit; ``run`` hands the row's ``created_at``
    to a callback before the commit's answer is read."""

    def __init__(self, sql: str, *, prepare: bool) -> None:
        self._sql, self._names = numbered(sql)
        self._prepare = prepare
        # Connections whose session holds the prepared statement (a connection's
        # session lives as long as the object; the pool drops broken ones).
        self._prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    def run(
        self, conn: psycopg.Connection[Any], params: Mapping[str, Any], before_commit: Callable[[datetime], None]
    ) -> datetime:
        """Insert; call ``before_commit(created_at)`` once the row exists and its commit
        is sent; return ``created_at`` once the commit is durable.  Raises ``Unsuitable``
        before anything is sent, psycopg's errors after (the INSERT's or the commit's;
        ``before_commit`` was not called when the INSERT failed).  An exception of
        ``before_commit`` is raised after the commit's answer is read."""
        values = [_text(params[n]) for n in self._names]
        try:
            return self._run(conn, values, before_commit)
        except psycopg.errors.InvalidSqlStatementName:  # the session lost it (DISCARD ALL)
            self._prepared.discard(conn)
            return self._run(conn, values, before_commit)
        except psycopg.errors.DuplicatePreparedStatement:  # prepared by a run we lost track of
            self._prepared.add(conn)
            return self._run(conn, values, before_commit)

    def _run(
        self, conn: psycopg.Connection[Any], values: list[bytes | None], before_commit: Callable[[datetime], None]
    ) -> datetime:
        pg = conn.pgconn
        with conn.lock:
            pg.enter_pipeline_mode()
            try:
                prepare = self._prepare and conn not in self._prepared
                if prepare:
                    pg.send_prepare(_STATEMENT, self._sql)
                if self._prepare:
                    pg.send_query_prepared(_STATEMENT, values, result_format=pq.Format.BINARY)
                else:
                    pg.send_query_params(self._sql, values, result_format=pq.Format.BINARY)
                pg.send_flush_request()
                pg.pipeline_sync()
                _send(pg)
                error: psycopg.Error | None = None
                if prepare:
                    error = _check(conn, _next(pg), pq.ExecStatus.COMMAND_OK)
                    if error is None:
                        self._prepared.add(conn)
                res = _next(pg)
                error = error or _check(conn, res, _OK)
                if error is not None:
                    _synced(conn)
                    raise error
                micros = int.from_bytes(res.get_value(0, 0) or b"", "big", signed=True)
                created_at = (_EPOCH + timedelta(microseconds=micros)).astimezone(conn.info.timezone)
                failure: BaseException | None = None
                try:
                    before_commit(created_at)
                except BaseException as exc:  # noqa: BLE001 - raised below, once the commit is read
                    failure = exc
                _synced(conn)
                if failure is not None:
                    raise failure
                return created_at
            finally:
                _leave_pipeline(conn)


def _send(pg: pq.abc.PGconn) -> None:
    while pg.flush():
        select.select([], [pg.socket], [])


def _next(pg: pq.abc.PGconn) -> pq.abc.PGresult:
    """The next result of the pipeline, waiting for it (libpq ends each query's results
    with a NULL, skipped here; nothing follows the Sync's, so no caller reads past it)."""
    while True:
        pg.consume_input()  # raises OperationalError when the connection broke
        if not pg.is_busy():
            res = pg.get_result()
            if res is not None:
                return res
            continue  # the end of a query whose results were all read
        select.select([pg.socket], [], [])


def _check(conn: psycopg.Connection[Any], res: pq.abc.PGresult, expected: pq.ExecStatus) -> psycopg.Error | None:
    if res.status == expected:
        return None
    if res.status == pq.ExecStatus.PIPELINE_ABORTED:
        return psycopg.errors.PipelineAborted("pipeline aborted")
    return psycopg.errors.error_from_result(res, encoding=conn.info.encoding)


def _synced(conn: psycopg.Connection[Any]) -> None:
    """Read up to the Sync's answer: PIPELINE_SYNC when the commit is durable; the
    commit's error, if it failed, comes first."""
    pg = conn.pgconn
    error: psycopg.Error | None = None
    while True:
        res = _next(pg)
        if res.status == _SYNC:
            break
        if res.status == _FATAL and error is None:
            error = psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
    if error is not None:
        raise error


def _leave_pipeline(conn: psycopg.Connection[Any]) -> None:
    pg = conn.pgconn
    if pg.status != pq.ConnStatus.OK:
        return  # broken: the pool replaces it
    try:
        pg.exit_pipeline_mode()
    except psycopg.Error:
        # Results left unread (an error between the send and the Sync's answer): the
        # session's state is unknown, so the pool must not hand it out again.
        conn.close()
