"""Lifecycle use cases a client drives: cancel a task, redrive or purge dead letters.

PostgreSQL changes first; Redis is told afterwards and may miss it (down, a
timeout): the claim's status guard turns a stale id away, and the sweeper's
reconciliation pushes what Redis lacks, so a failed push never loses work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from chalicelib.container import Container
from chalicelib.core.audit import Purged
from chalicelib.core.errors import ConflictError, NotFoundError, QueueError, ValidationError
from chalicelib.core.model import QueueEntry, Status, Task
from chalicelib.observability import metrics
from chalicelib.services import outbox
from chalicelib.services.reads import get_task

REDRIVE_MAX = 500  # dead letters redriven by one call at most
PURGE_MAX = 500  # dead letters purged by one call at most


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was waiting (PENDING/QUEUED): now CANCELLED
    REQUESTED = "requested"  # it is running: the drainer honours the request at its next checkpoint
    ALREADY_FINAL = "already_final"  # COMPLETED, FAILED or CANCELLED already: nothing changed


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    task: Task  # as it is now
    before: Status  # its status when the cancel arrived


def cancel(rt: Container, tenant: str, task_id: str, *, actor: str = "api") -> CancelResult:
    """Cancel a waiting task, or ask a running one to stop; a final task is left alone."""
    done = rt.store.cancel(tenant, task_id, actor=actor)
    if done is None:
        raise NotFoundError(f"no task {task_id}")
    task, before = done.task, done.before
    if before.is_final:
        return CancelResult(CancelOutcome.ALREADY_FINAL, task, before)
    metrics.log_cancelled(tenant, task, before)
    if task.status is not Status.CANCELLED:
        return CancelResult(CancelOutcome.REQUESTED, task, before)
    try:
        rt.queue.remove([QueueEntry.of(task)])
        if done.hook is not None:
            rt.queue.push([QueueEntry.webhook(done.hook.id, task.tenant, done.hook.enqueued_ms)])
    except QueueError:
        pass  # the claim's guard turns the stale id away; the sweeper pushes the webhook
    if task.has_followers:
        outbox.release_quietly(rt)  # its end may have released other tasks
    return CancelResult(CancelOutcome.CANCELLED, task, before)


@dataclass(frozen=True)
class RedriveSelection:
    """Which dead letters to redrive: these ids, or those of this task name, or both
    (ANDed); at most ``limit``."""

    ids: list[str] | None = None
    name: str | None = None
    limit: int = REDRIVE_MAX


def redrive_one(rt: Container, tenant: str, task_id: str, *, actor: str = "api") -> Task:
    """FAILED → QUEUED with a fresh retry budget; any other status is a conflict."""
    redriven = rt.store.redrive(tenant, ids=[task_id], limit=1, actor=actor)
    if not redriven:
        task = get_task(rt, tenant, task_id)
        raise ConflictError(
            f"task {task_id} is {task.status.value}; only FAILED tasks can be redriven",
            details={"status": task.status.value},
        )
    enqueue_redriven(rt, redriven)
    metrics.log_redriven(tenant, redriven)
    return redriven[0]


def redrive_many(rt: Container, tenant: str, selection: RedriveSelection, *, actor: str) -> list[Task]:
    """Redrive a selection; the task events and one audit row name ``actor``."""
    redriven = rt.store.redrive(
        tenant, ids=selection.ids, name=selection.name, limit=selection.limit, actor=actor, audited=True
    )
    enqueue_redriven(rt, redriven)
    metrics.log_redriven(tenant, redriven)
    return redriven


def enqueue_redriven(rt: Container, redriven: Sequence[Task]) -> None:
    try:
        rt.queue.push([QueueEntry.of(t) for t in redriven])
    except QueueError:
        pass  # QUEUED in PostgreSQL: the sweeper's reconciliation enqueues them


@dataclass(frozen=True)
class PurgeSelection:
    """Which dead letters to delete for good: every filter given must match (at least
    one is given); at most ``limit`` a call."""

    ids: list[str] | None = None
    name: str | None = None
    failed_before: datetime | None = None
    error_type: str | None = None  # the last attempt's error type (e.g. PermanentError)
    limit: int = PURGE_MAX


def purge_dead_letters(rt: Container, tenant: str, selection: PurgeSelection, *, actor: str) -> Purged:
    """Delete matching dead letters with their history; ``more`` says whether another
    call would find more.  The deletion, its counter and its audit row commit together.
    Nothing to do with Redis: a FAILED task has no entry there."""
    s = selection
    if s.ids is None and s.name is None and s.failed_before is None and s.error_type is None:
        raise ValidationError(
            "give ids, name, failed_before or error_type: a purge never empties the dead-letter queue unasked"
        )
    purged = rt.store.purge_dead_letters(
        tenant,
        ids=selection.ids,
        name=selection.name,
        failed_before=selection.failed_before,
        error_type=selection.error_type,
        limit=selection.limit,
        actor=actor,
    )
    metrics.log_purged(tenant, actor, purged)
    return purged
