"""Deadlines: a waiting task past its ``expires_at`` is finalised, never started.

The claim statement itself refuses a task past its deadline (``queries.sql``: claim),
so no attempt starts after it whoever races whom.  What is left is to give such a
task its final state (CANCELLED, error_type ``Expired``, counted as ``expired``) and
drop it from Redis: every sweep does it for all of them, and a drainer whose claim
refused some ids does it for those at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from chalicelib.container import Container
from chalicelib.core.errors import QueueError, UnavailableError
from chalicelib.core.model import QueueEntry, Status
from chalicelib.core.records import ExpiredTask
from chalicelib.observability.log import logger
from chalicelib.services import outbox

PAGE = 1000


def expire_due(rt: Container, *, actor: str = "sweep") -> int:
    """Finalise every waiting task past its deadline (the sweeper); returns how many.
    Raises ``UnavailableError`` when PostgreSQL is away."""
    total = 0
    while True:
        expired = rt.store.expire_waiting(limit=PAGE, actor=actor)
        _tidy(rt, expired)
        total += len(expired)
        if len(expired) < PAGE:
            return total


def expire_refused(rt: Container, ids: Sequence[str], *, actor: str) -> int:
    """Finalise those of ``ids`` (refused by a claim) that are past their deadline; a
    failure is logged and left to the sweeper."""
    try:
        expired = rt.store.expire_waiting(ids=ids, limit=len(ids), actor=actor)
    except UnavailableError as exc:
        logger.warning("expired tasks not finalised; the sweeper will", extra={"error": str(exc)})
        return 0
    _tidy(rt, expired)
    return len(expired)


def _tidy(rt: Container, expired: list[ExpiredTask]) -> None:
    """Drop the expired ids from Redis, queue their completion webhooks, and push what
    their end released (a batch's follow-up, a dependent task)."""
    if not expired:
        return
    logger.info(
        "tasks expired before they started",
        extra={"event": "expire", "count": len(expired), "task_ids": [t.id for t in expired[:20]]},
    )
    gone = [
        QueueEntry.due_at(t.id, t.tenant, t.priority, 0.0, t.name)
        if t.before is Status.PENDING
        else QueueEntry.ready(t.id, t.tenant, t.priority, 0.0, t.name)
        for t in expired
    ]
    hooks = [QueueEntry.webhook(t.hook.id, t.tenant, t.hook.enqueued_ms) for t in expired if t.hook is not None]
    try:
        rt.queue.remove(gone)
        rt.queue.push(hooks)
    except QueueError as exc:
        # A leftover id is refused by the next claim; the sweeper re-adds QUEUED hooks.
        logger.warning("expired tasks not dropped from Redis", extra={"error": str(exc)})
    if any(t.has_followers for t in expired):
        outbox.release_quietly(rt)
