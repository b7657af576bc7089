"""The store's submit statements (``Store`` inherits them), kept apart so ``store.py``
stays readable: one task by its own statement (the commonest, due now without a key,
with its commit overlapping the push: ``early_row``), several by one statement, many
by COPY (``bulkcopy``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

import psycopg

from chalicelib.adapters.postgres.bulkcopy import COPY_MIN
from chalicelib.adapters.postgres.direct import Unsuitable
from chalicelib.adapters.postgres.early_row import EarlyInsert
from chalicelib.adapters.postgres.rows import accepted, due_now_without_key, encode, new_task_row, one_task_params
from chalicelib.core.model import Accepted, NewTask, Task
from chalicelib.core.records import IdempotentTask

Row = dict[str, Any]
Inserted = Callable[[list[Task]], None]


class _Store(Protocol):
    _q: dict[str, str]
    _early: EarlyInsert

    def connection(self) -> AbstractContextManager[psycopg.Connection[Row]]: ...
    def _all(self, name: str, params: dict[str, Any]) -> list[Row]: ...
    def copy_tasks(self, tasks: Sequence[NewTask], actor: str) -> list[Task]: ...
    def _insert_params(self, tasks: Sequence[NewTask], actor: str) -> dict[str, Any]: ...
    def _insert_task_now(self, t: NewTask, actor: str, inserted: Inserted | None) -> Task: ...


class InsertQueries:
    """A mixin of ``Store``."""

    def insert_tasks(
        self: _Store, tasks: Sequence[NewTask], *, actor: str = "api", inserted: Inserted | None = None
    ) -> list[Task]:
        """Insert tasks with one statement; returns those inserted (idempotency
        conflicts are left out: see ``tasks_by_idempotency_keys``); many go by COPY.

        ``inserted``, if given, is called with them: for one task due now without a key
        (most single submits) once its id's submit lock is held and its INSERT and commit
        are on their way, so the push that wakes a drainer overlaps both (``early_row``;
        a claim waits for that lock); for the others after the commit.  Either way this
        returns, or raises, once the outcome is known: for the first kind an INSERT
        refused after the hand-off raises too (a claim of the pushed id finds no row and
        drops it, as for a commit that fails).  An exception of ``inserted`` is
        raised after that."""
        if len(tasks) == 1 and tasks[0].unique_key is None and tasks[0].batch_id is None:  # its own statement
            t = tasks[0]
            if due_now_without_key(t):  # most single submits: QUEUED now, nothing to decide
                return [self._insert_task_now(t, actor, inserted)]
            done = accepted(tasks, self._all("insert_task", one_task_params(t, actor)))
        elif len(tasks) >= COPY_MIN:
            done = self.copy_tasks(tasks, actor)
        elif tasks:
            done = accepted(tasks, self._all("insert_tasks", self._insert_params(tasks, actor)))
        else:
            return []
        if inserted is not None:
            inserted(done)
        return done

    def _insert_task_now(self: _Store, t: NewTask, actor: str, inserted: Inserted | None) -> Task:
        params = one_task_params(t, actor)
        if inserted is not None:
            task: list[Task] = []

            def before_commit(created_at: datetime) -> None:
                task[:] = [Accepted.queued_now(t, created_at)]  # a retried run hands it over again
                inserted(task)

            try:
                with self.connection() as conn:
                    self._early.run(conn, params, before_commit)
                return task[0]
            except Unsuitable:
                pass  # a value for the ordinary path to judge: nothing was sent
        row = self._all("insert_task_now", params)[0]
        done = Accepted.queued_now(t, row["created_at"])
        if inserted is not None:
            inserted([done])
        return done

    def _insert_params(self, tasks: Sequence[NewTask], actor: str) -> dict[str, Any]:
        return {"tasks": encode([new_task_row(t) for t in tasks]), "actor": actor}

    def tasks_by_idempotency_keys(self: _Store, tenant: str, keys: Sequence[str]) -> dict[str, IdempotentTask]:
        """The tenant's tasks holding ``keys``, by key."""
        rows = self._all("tasks_by_idempotency_keys", {"tenant": tenant, "keys": list(keys)})
        return {r["idempotency_key"]: IdempotentTask.from_row(r) for r in rows}
