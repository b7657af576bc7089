"""Push the tasks that triggers made ready (the outbox, migration 0007) to Redis.

A trigger that releases a task (a workflow step whose last parent completed, a
batch's follow-up task) cannot talk to Redis; it writes the task's id to
``task_outbox`` in the same transaction.  ``release`` moves those ids to Redis.  It
runs where such a trigger may just have fired, so the task starts within
milliseconds: the drainer after a finish whose tasks have followers
(``Recorded.has_followers``), the API after cancelling such a task, and every sweep
as the safety net (in AWS the sweeper runs once a minute: too slow on its own).
"""

from __future__ import annotations

from chalicelib.container import Container
from chalicelib.core.errors import QueueError, UnavailableError
from chalicelib.core.model import QueueEntry, Status
from chalicelib.core.records import LiveTask
from chalicelib.observability.log import logger

PAGE = 1000


def _entries(tasks: list[LiveTask]) -> list[QueueEntry]:
    """Ready entries for QUEUED tasks, delayed ones for PENDING (a released task whose
    run_at is still ahead); anything else (cancelled meanwhile) needs no entry."""
    out = []
    for t in tasks:
        if t.status is Status.QUEUED:
            out.append(QueueEntry.ready(t.id, t.tenant, t.priority, t.enqueued_ms, t.name))
        elif t.status is Status.PENDING:
            out.append(QueueEntry.due_at(t.id, t.tenant, t.priority, t.run_at_ms, t.name))
    return out


def release(rt: Container) -> int:
    """Push every task in the outbox to Redis; returns how many were taken.  Raises
    ``UnavailableError`` (``QueueError``/``StoreError``) when Redis or PostgreSQL is
    away: the rows stay for the next call."""

    def publish(tasks: list[LiveTask]) -> None:
        rt.queue.push(_entries(tasks), only_new=True)

    total = 0
    while True:
        taken = rt.store.take_outbox(publish, limit=PAGE)
        total += taken
        if taken < PAGE:
            return total


def release_quietly(rt: Container) -> int:
    """``release`` for callers that have already committed their own work (drain, the
    API): a failure is logged, and the next sweep pushes the tasks instead."""
    try:
        return release(rt)
    except (QueueError, UnavailableError) as exc:
        logger.warning("outbox not released; the sweeper will push it", extra={"error": str(exc)})
        return 0
