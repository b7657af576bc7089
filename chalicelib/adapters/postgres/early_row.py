"""A single submit whose id the caller pushes before its INSERT has even run.

Why: a submit is accepted at its durable commit, which waits for the WAL flush
(0.2-0.7 ms on the disks we measured), and the push that wakes a drainer used to
wait for that commit in turn, then (round 11) for the INSERT's row.  Here two
statements and the Sync that commits them go to PostgreSQL in one write (libpq's
pipeline mode; the statements before a Sync are one implicit transaction):
``submit_lock``, which takes the id's advisory lock (``SUBMIT_LOCK_CLASS``,
``uuid_hash(id)``) and answers with ``now()``, then a Flush, then ``insert_task_now``.
PostgreSQL answers the lock at once and goes on with the INSERT and the commit while
the caller pushes the id to Redis; the caller learns whether the task is accepted
from the INSERT's answer and the Sync's.  The INSERT ran 0.1-0.25 ms on our 2-core
VM, which the push no longer waits for (issue 14 round 12).

A drainer can therefore be handed an id whose row is not inserted, or not committed,
yet, which its claim's snapshot cannot see.  The lock is held from before the push
until the transaction ends, and the claim waits on it for any id that matches no row
(migration 0042) before it looks again: the commit makes the row visible, a rollback
(the INSERT refused, or its commit) releases the lock with no row, and a claim never
runs ahead of the commit it depends on.  The rest is on its way with the lock, so the
lock is held for the INSERT's and the commit's own duration whatever the caller does
meanwhile (its push, a pause of its process).  The row's created_at is the lock's
``now()``: both statements are one transaction, whose start ``now()`` is.

Only the statement that takes most single submits (``insert_task_now``) goes this
way; a value libpq's text parameters cannot carry takes the ordinary path
(``direct.Unsuitable``), which pushes after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from chalicelib.adapters.postgres.direct import Prepared, pipeline, retrying, send, synced

# The advisory lock class (two-int form) of a submit's commit in flight; the claim
# waits on it (migration 0042).  tests/unit/test_advisory_locks.py keeps it unique.
SUBMIT_LOCK_CLASS = 7301955

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's, for a binary timestamptz


class EarlyInsert:
    """``submit_lock`` and ``insert_task_now`` sent with their commit; ``run`` hands the
    row's ``created_at`` to a callback before the INSERT's answer is read."""

    def __init__(self, lock_sql: str, insert_sql: str, *, prepare: bool) -> None:
        self._lock = Prepared("tasklane_submit_lock", lock_sql, prepare=prepare)
        self._insert = Prepared("tasklane_insert_task_now", insert_sql, prepare=prepare)

    def run(
        self, conn: psycopg.Connection[Any], params: Mapping[str, Any], before_commit: Callable[[datetime], None]
    ) -> datetime:
        """Insert; call ``before_commit(created_at)`` once the id's lock is held and the
        INSERT and its commit are sent; return ``created_at`` once the commit is durable.
        Raises ``Unsuitable`` before anything is sent, psycopg's errors after: the lock's
        (``before_commit`` not called), the INSERT's or the commit's (it was).  An
        exception of ``before_commit`` is raised after the commit's answer is read."""
        lock_values = self._lock.values(conn, params)
        values = self._insert.values(conn, params)
        return retrying(  # type: ignore[no-any-return]
            conn, [self._lock, self._insert], lambda: self._run(conn, lock_values, values, before_commit)
        )

    def _run(
        self,
        conn: psycopg.Connection[Any],
        lock_values: list[bytes | None],
        values: list[bytes | None],
        before_commit: Callable[[datetime], None],
    ) -> datetime:
        pg = conn.pgconn
        with pipeline(conn):
            locking = self._lock.queue(conn, lock_values, binary=True)
            pg.send_flush_request()  # the lock's answer before the INSERT runs
            inserting = self._insert.queue(conn, values, binary=True)
            pg.pipeline_sync()
            send(pg)
            res, error = self._lock.take(conn, locking)
            if error is not None:
                synced(conn)  # the rest was skipped: nothing inserted
                raise error
            micros = int.from_bytes(res.get_value(0, 0) or b"", "big", signed=True)
            created_at = (_EPOCH + timedelta(microseconds=micros)).astimezone(conn.info.timezone)
            failure: BaseException | None = None
            try:
                before_commit(created_at)
            except BaseException as exc:  # noqa: BLE001 - raised below, once the commit is read
                failure = exc
            _, error = self._insert.take(conn, inserting)
            synced(conn)
            if error is not None:
                raise error
            if failure is not None:
                raise failure
            return created_at
