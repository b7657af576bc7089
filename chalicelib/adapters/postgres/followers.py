"""The store's side of tasks that react to other tasks' ends (``Store`` inherits it):
the outbox that triggers fill with tasks they made ready (migration 0007), and
dependencies and workflows (migration 0008).

Kept apart so ``store.py`` stays readable; the SQL is in ``queries.sql`` like the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import psycopg

from chalicelib.adapters.postgres.rows import encode, new_task_row
from chalicelib.core.dependencies import Edge, ParentResult, ParentState, TaskLink, Workflow
from chalicelib.core.model import NewTask, Task
from chalicelib.core.records import LiveTask

Row = dict[str, Any]
T = TypeVar("T")


class _Store(Protocol):
    _q: dict[str, str]
    _webhook: dict[str, int]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Row]]: ...
    def _transaction(self, work: Callable[[psycopg.Connection[Row]], T]) -> T: ...
    def _one(self, name: str, params: dict[str, Any]) -> Row | None: ...
    def _all(self, name: str, params: dict[str, Any]) -> list[Row]: ...
    def restore_archived(self, tenant: str, ids: Sequence[str]) -> list[str]: ...


def _linked_json(tasks: Sequence[NewTask]) -> str:
    return encode(
        [
            new_task_row(t)
            | {
                "waiting_on": t.waiting_on,
                "run_anyway": t.run_anyway,
                "has_followers": t.has_followers,
                "cancelled_by": t.cancelled_by,
            }
            for t in tasks
        ]
    )


def _edges_json(edges: Sequence[Edge]) -> str:
    return encode([{"parent": e.parent, "child": e.child, "key": e.key, "resolved": e.resolved} for e in edges])


class FollowerQueries:
    """A mixin of ``Store``."""

    def take_outbox(self: _Store, publish: Callable[[list[LiveTask]], None], *, limit: int) -> int:
        """Take up to ``limit`` outbox rows and hand their tasks to ``publish`` (the Redis
        push) before the delete commits: if ``publish`` raises, the rows stay for the next
        taker.  Returns how many rows were taken."""
        with self.connection() as conn, conn.transaction():
            rows = [LiveTask.from_row(r) for r in conn.execute(self._q["take_outbox"], {"limit": limit})]
            if rows:
                publish(rows)
            return len(rows)

    def insert_dependent(
        self: _Store,
        tenant: str,
        parents: Sequence[str],
        build: Callable[[list[ParentState]], tuple[NewTask, list[Edge]]],
        *,
        actor: str,
    ) -> Task | None:
        """Lock the tenant's ``parents`` (marking them has_followers), let ``build``
        decide the new task from their states (an exception it raises rolls all of it
        back), and insert the task with its edges, in one transaction, run again (``build``
        too) when PostgreSQL rolls it back to end a deadlock (``retry_conflicts``).  None
        when its idempotency key exists already."""

        def work(conn: psycopg.Connection[Row]) -> Task | None:
            found = [
                ParentState.from_row(r)
                for r in conn.execute(self._q["lock_parents"], {"tenant": tenant, "ids": list(parents)})
            ]
            task, edges = build(found)
            params = {"tasks": _linked_json([task]), "edges": _edges_json(edges), "actor": actor, **self._webhook}
            row = conn.execute(self._q["insert_linked_tasks"], params).fetchone()
            return Task.from_row(row) if row else None

        return self._transaction(work)

    def insert_workflow(
        self: _Store,
        tenant: str,
        workflow_id: str,
        tasks: Sequence[NewTask],
        edges: Sequence[Edge],
        steps: dict[str, str],
        *,
        actor: str,
    ) -> list[Task]:
        """A workflow's tasks, edges and row in one transaction (``retry_conflicts``)."""

        def work(conn: psycopg.Connection[Row]) -> list[Task]:
            params = {"tasks": _linked_json(tasks), "edges": _edges_json(edges), "actor": actor, **self._webhook}
            rows = conn.execute(self._q["insert_linked_tasks"], params).fetchall()
            conn.execute(self._q["insert_workflow"], {"id": workflow_id, "tenant": tenant, "steps": encode(steps)})
            return [Task.from_row(r) for r in rows]

        return self._transaction(work)

    def prune_workflows(self: _Store, retention_seconds: float, *, limit: int = 5000) -> int:
        """Delete workflows created before the retention period whose steps' tasks are
        all gone, among the next ``limit`` past retention after where the previous
        call stopped (from the oldest again once it read the newest); returns how many."""
        row = self._one("prune_workflows", {"retention_seconds": retention_seconds, "limit": limit})
        return int(row["pruned"]) if row else 0

    def get_workflow(self: _Store, tenant: str, workflow_id: str) -> tuple[Workflow, list[Task]] | None:
        """The workflow and its steps' tasks (those not pruned yet)."""
        row = self._one("get_workflow", {"id": workflow_id, "tenant": tenant})
        if row is None:
            return None
        workflow = Workflow.from_row(row)
        rows = self._all("tasks_by_ids", {"tenant": tenant, "ids": list(workflow.steps.values())})
        return workflow, [Task.from_row(r) for r in rows]

    def parent_results(self: _Store, child_ids: Sequence[str]) -> list[ParentResult]:
        """The parents of ``child_ids`` with their status and result."""
        return [ParentResult.from_row(r) for r in self._all("parent_results", {"ids": list(child_ids)})]

    def existing_ids(self: _Store, tenant: str, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` the tenant has a task for.  Archived ones (migration 0027)
        are brought back into ``tasks`` first, where a new task's edges can reference
        them; only when some id is not in ``tasks``."""
        found = [r["id"] for r in self._all("existing_ids", {"tenant": tenant, "ids": list(ids)})]
        if len(found) < len(set(ids)):
            found += self.restore_archived(tenant, [i for i in ids if i not in set(found)])
        return found

    def edges_of(self: _Store, child_ids: Sequence[str]) -> list[Edge]:
        """The edges into ``child_ids``."""
        return [Edge.from_row(r) for r in self._all("edges_of", {"ids": list(child_ids)})]

    def task_links(self: _Store, task_id: str) -> list[TaskLink]:
        """A task's parents and children."""
        return [TaskLink.from_row(r) for r in self._all("task_links", {"id": task_id})]
