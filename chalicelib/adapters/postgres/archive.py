"""The store's side of the archive of finished tasks (``Store`` inherits it; migration
0027): ``tasks_archive``, range-partitioned on the task id by UTC day, which finished
tasks move to once past the idempotency window, so that retention drops a day's
partition instead of deleting rows, and ``tasks`` stays the size of the live work.

Reads that may meet a finished task read both tables in their own statement
(``get_task``, ``list_tasks``, ``tasks_by_ids``, ``schedule_runs``, and the pruning of
batches and workflows); what is here is the sweeper's maintenance and the two places
where a task has to be in ``tasks``: a cancel (409 for an archived task, as for any
final one) and a new dependent (its edges reference ``tasks``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import psycopg

from chalicelib.core.errors import StoreError
from chalicelib.core.model import Task

Row = dict[str, Any]

# A finished task stays in ``tasks`` at least this long after it was created (the
# sweeper's ARCHIVE_AFTER_SECONDS, a day, less an hour for the clocks of the API and the
# database to differ): rows created since are never in the archive.
NEVER_ARCHIVED = dt.timedelta(hours=23)
_TASKS = "SELECT * FROM tasks\n"


def read_both(statement: str) -> str:
    """``statement`` (a ``SELECT * FROM tasks`` with its conditions) over ``tasks`` and
    ``tasks_archive`` as one table: the UNION ALL is flattened, the conditions pushed
    into both sides, and an ORDER BY on an index of both is a Merge Append of every
    partition's index scan.  One statement, so a task moving meanwhile is read once."""
    if _TASKS not in statement:
        raise ValueError("read_both takes a statement reading `SELECT * FROM tasks`")
    return statement.replace(_TASKS, "SELECT * FROM (SELECT * FROM tasks UNION ALL SELECT * FROM tasks_archive) t\n", 1)


def archive_may_hold(page: Sequence[Row], limit: int) -> bool:
    """Whether archived tasks could belong in a newest-first ``page`` of at most ``limit``
    rows read from ``tasks`` alone: unless the page is full and its oldest row is newer
    than anything the archive holds.  A first page of a busy tenant reads ``tasks`` only
    (a 50-task page cost 315 us of backend CPU, against 990 us for the Merge Append over
    9 archive partitions)."""
    if len(page) < limit:
        return True
    return bool(page[-1]["created_at"] <= dt.datetime.now(dt.UTC) - NEVER_ARCHIVED)


class _Store(Protocol):
    _q: dict[str, str]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Row]]: ...
    def _one(self, name: str, params: dict[str, Any]) -> Row | None: ...
    def _all(self, name: str, params: dict[str, Any]) -> list[Row]: ...
    def _maintain(self, name: str, params: dict[str, Any]) -> Any: ...


class ArchiveQueries:
    """A mixin of ``Store``."""

    def archive_finished(self: _Store, after_seconds: float, *, page_size: int = 1000) -> tuple[int, bool] | None:
        """Move the next page of finished tasks past ``after_seconds`` that may leave
        ``tasks`` (one statement, one transaction); (how many moved, whether the page
        was full), or None when another sweeper is at it."""
        row = self._one("archive_finished", {"after_seconds": after_seconds, "page_size": page_size})
        if row is None or row["moved"] is None:
            return None
        return int(row["moved"]), bool(row["full_page"])

    def ensure_archive_partitions(self: _Store, retention_seconds: float, days_ahead: int) -> int:
        """Create the missing day partitions of ``tasks_archive`` from the day retention
        reaches back to, to ``days_ahead`` days ahead (UTC); returns how many."""
        params = {"retention_seconds": retention_seconds, "days_ahead": days_ahead}
        return int(self._maintain("ensure_archive_partitions", params) or 0)

    def drop_archive_partition(self: _Store, retention_seconds: float) -> str | None:
        """Drop the oldest ``tasks_archive`` partition whose day ended before retention;
        its name, or None when none is due (or another sweeper is at it).  Its tasks are
        counted by name in the "pruned" counter, as those pruned row by row are.  The archive is
        locked first with a short wait (``archive_drop_lock_wait``): behind a long reader
        the drop is left to a later sweep (``StoreError``) instead of queueing every read
        of an archived task behind it."""
        params = {"retention_seconds": retention_seconds}
        with self.connection() as conn, conn.transaction():
            # The due partition's tasks counted as pruned first, in this transaction: a
            # drop that cannot lock the archive below rolls the count back with it
            # (migration 0029).  None due: the archive is not locked at all.
            counted = conn.execute(self._q["count_archive_partition"], params).fetchone()
            if counted is None or counted["counted"] is None:
                return None
            conn.execute(self._q["archive_drop_lock_wait"])
            try:
                conn.execute(self._q["lock_archive"])
            except psycopg.errors.LockNotAvailable as exc:
                raise StoreError("tasks_archive is in use; its partition is dropped by a later sweep") from exc
            row = conn.execute(self._q["drop_archive_partition"], params).fetchone()
        dropped = row["dropped"] if row else None
        return str(dropped) if dropped else None

    def archived_task(self: _Store, tenant: str, task_id: str) -> Task | None:
        row = self._one("archived_task", {"id": task_id, "tenant": tenant})
        return Task.from_row(row) if row else None

    def restore_archived(self: _Store, tenant: str, ids: Sequence[str]) -> list[str]:
        """Bring the tenant's archived tasks among ``ids`` back into ``tasks``; their ids."""
        return [r["id"] for r in self._all("restore_archived", {"tenant": tenant, "ids": list(ids)})]
