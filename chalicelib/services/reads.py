"""Read use cases: one task with its history, and keyset-paginated lists of tasks
and dead letters.  Everything is scoped to the caller's tenant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib.container import Container
from chalicelib.core.dependencies import TaskLink
from chalicelib.core.errors import NotFoundError
from chalicelib.core.model import Priority, Status, Task
from chalicelib.core.records import TaskEvent
from chalicelib.services import dependencies


@dataclass(frozen=True)
class Position:
    """Where a page ended, for the next one: the sort timestamp and id of its last task
    (keyset pagination, so inserts between pages neither repeat nor skip a task)."""

    at: datetime
    task_id: str


@dataclass(frozen=True)
class Page:
    items: list[Task]
    next_after: Position | None  # None on the last page


@dataclass(frozen=True)
class TaskFilter:
    status: Status | None = None
    name: str | None = None
    priority: Priority | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class TaskDetail:
    """A task and its audit trail, oldest first."""

    task: Task
    events: list[TaskEvent]
    links: list[TaskLink] = field(default_factory=list)  # its parents and children


def get_task(rt: Container, tenant: str, task_id: str) -> Task:
    task = rt.store.get_task(tenant, task_id)
    if task is None:
        raise NotFoundError(f"no task {task_id}")
    return task


def task_detail(rt: Container, tenant: str, task_id: str) -> TaskDetail:
    """The task with every recorded transition (the API shows their errors)."""
    task = get_task(rt, tenant, task_id)
    return TaskDetail(task, rt.store.task_events(task_id, since=task.created_at), dependencies.links(rt, task))


def list_tasks(rt: Container, tenant: str, where: TaskFilter, *, limit: int, after: Position | None) -> Page:
    """Newest first; ``after`` is the previous page's ``next_after``."""
    found = rt.store.list_tasks(
        tenant,
        status=where.status.value if where.status else None,
        name=where.name,
        priority=where.priority.value if where.priority else None,
        created_after=where.created_after,
        created_before=where.created_before,
        after=(after.at, after.task_id) if after else None,
        limit=limit + 1,
    )
    return _page(found, limit, lambda t: t.created_at)


def dead_letters(rt: Container, tenant: str, *, name: str | None, limit: int, after: Position | None) -> Page:
    """FAILED tasks, most recently finished first."""
    found = rt.store.list_dead_letters(
        tenant, name=name, limit=limit + 1, after=(after.at, after.task_id) if after else None
    )
    return _page(found, limit, lambda t: t.finished_at)


def _page(found: list[Task], limit: int, sort_key: Callable[[Task], datetime | None]) -> Page:
    """One row past the limit was fetched: its presence says another page follows."""
    page = found[:limit]
    if len(found) <= limit:
        return Page(page, None)
    at = sort_key(page[-1])
    assert at is not None  # the sort column of a listed row is never NULL
    return Page(page, Position(at, page[-1].id))
