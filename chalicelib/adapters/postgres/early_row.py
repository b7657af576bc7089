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
way; a value libpq's text parameters cannot carry takes the ordinary path
(``direct.Unsuitable``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from chalicelib.adapters.postgres.direct import Prepared, pipeline, synced

# The advisory lock class (two-int form) of a submit's commit in flight; the claim
# waits on it (migration 0042).  tests/unit/test_advisory_locks.py keeps it unique.
SUBMIT_LOCK_CLASS = 7301955

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's, for a binary timestamptz


class EarlyInsert:
    """``insert_task_now`` sent with its commit; ``run`` hands the row's ``created_at``
    to a callback before the commit's answer is read."""

    def __init__(self, sql: str, *, prepare: bool) -> None:
        self._statement = Prepared("tasklane_insert_task_now", sql, prepare=prepare)

    def run(
        self, conn: psycopg.Connection[Any], params: Mapping[str, Any], before_commit: Callable[[datetime], None]
    ) -> datetime:
        """Insert; call ``before_commit(created_at)`` once the row exists and its commit
        is sent; return ``created_at`` once the commit is durable.  Raises ``Unsuitable``
        before anything is sent, psycopg's errors after (the INSERT's or the commit's;
        ``before_commit`` was not called when the INSERT failed).  An exception of
        ``before_commit`` is raised after the commit's answer is read."""
        values = self._statement.values(params)
        return self._statement.retrying(conn, lambda: self._run(conn, values, before_commit))  # type: ignore[no-any-return]

    def _run(
        self, conn: psycopg.Connection[Any], values: list[bytes | None], before_commit: Callable[[datetime], None]
    ) -> datetime:
        with pipeline(conn):
            res = self._statement.result(conn, values, binary=True, early=True)  # the row, the commit on its way
            micros = int.from_bytes(res.get_value(0, 0) or b"", "big", signed=True)
            created_at = (_EPOCH + timedelta(microseconds=micros)).astimezone(conn.info.timezone)
            failure: BaseException | None = None
            try:
                before_commit(created_at)
            except BaseException as exc:  # noqa: BLE001 - raised below, once the commit is read
                failure = exc
            synced(conn)
            if failure is not None:
                raise failure
            return created_at
