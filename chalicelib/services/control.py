"""Queue control use cases: pause and resume a task type, cancel tasks by filter.

**Pause** is enforced by PostgreSQL, not by the drainers: the claim statement refuses
a task whose (type, tenant) or type is paused (migration 0008), so no drainer starts
one once the pause has committed, however many run and whatever they cached.  A task
already PROCESSING finishes.  Paused work must not cost anything while it waits:

- the pause takes the type's QUEUED ids out of Redis (best effort, up to
  ``MOVE_MAX``); any id that is still there, or arrives later (a submit, a due retry),
  is refused by its next claim and dropped from Redis like any stale id, so each
  costs at most one wasted claim and never blocks the other types in the batch;
- the sweeper's reconcile and rebuild leave paused QUEUED rows out, and its
  promotion of due tasks does not push paused ones;
- resume lifts the pause, then pushes the type's QUEUED tasks back (ZADD NX, which
  wakes idle drainers).  Anything a resume misses (Redis down, a drainer that
  dropped an id just after the push) is pushed by the sweeper's reconcile.

**Cancel by filter** changes at most ``CANCEL_MAX`` tasks a call by the rules of a
single cancel (``lifecycle.cancel``) and says whether more match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from chalicelib.adapters.redis.queue import Queue
from chalicelib.container import Container
from chalicelib.core.control import GLOBAL, Pause
from chalicelib.core.errors import NotFoundError, QueueError, ValidationError
from chalicelib.core.model import QueueEntry, Status, Task
from chalicelib.observability import metrics
from chalicelib.observability.log import logger
from chalicelib.services import outbox

MOVE_MAX = 100_000  # QUEUED ids a pause takes out of Redis, or a resume puts back, in one call
CANCEL_MAX = 500  # tasks cancelled by one call at most
CANCELLABLE = (Status.WAITING, Status.PENDING, Status.QUEUED, Status.PROCESSING)


@dataclass(frozen=True)
class PauseResult:
    pause: Pause  # the pause in force (changed: this call made it)
    moved: int  # QUEUED ids taken out of Redis


@dataclass(frozen=True)
class ResumeResult:
    name: str
    tenant: str  # GLOBAL for every tenant
    lifted: Pause | None  # the pause this call lifted; None when there was none
    requeued: int  # QUEUED tasks pushed back to Redis
    still_paused: bool  # another pause (the global one, or the tenant's own) still holds it


def known_type(rt: Container, name: str) -> str:
    """``name`` when it is a task type this deployment runs, else a 404."""
    if rt.registry.get(name) is None:
        raise NotFoundError(f"no task type {name!r}; GET /api/v1/task-types lists them")
    return name


def pause(rt: Container, tenant: str, name: str, *, actor: str) -> PauseResult:
    """Pause ``name`` for ``tenant`` (``GLOBAL``: every tenant); idempotent."""
    done = rt.store.pause_task_type(known_type(rt, name), tenant, actor=actor)
    moved = 0
    if done.changed:
        moved = _move(rt, name, tenant, unpaused_only=False, apply=lambda q, es: q.remove(es))
        metrics.log_pause(done, paused=True, actor=actor, moved=moved)
    return PauseResult(done, moved)


def resume(rt: Container, tenant: str, name: str, *, actor: str) -> ResumeResult:
    """Lift the pause of ``name`` for ``tenant`` (``GLOBAL``: the global one) and push the
    work it held back; idempotent (resuming a running type changes nothing)."""
    lifted = rt.store.resume_task_type(known_type(rt, name), tenant, actor=actor)
    requeued = 0
    if lifted is not None:
        requeued = _move(rt, name, tenant, unpaused_only=True, apply=lambda q, es: q.push(es, only_new=True))
        metrics.log_pause(lifted, paused=False, actor=actor, moved=requeued)
    still = any(p.name == name for p in rt.store.paused_task_types(None if tenant == GLOBAL else tenant))
    return ResumeResult(name, tenant, lifted, requeued, still)


def pauses(rt: Container, tenant: str | None) -> list[Pause]:
    """The pauses ``tenant`` is under (its own and the global ones); all for None."""
    return rt.store.paused_task_types(tenant)


def _move(
    rt: Container,
    name: str,
    tenant: str,
    *,
    unpaused_only: bool,
    apply: Callable[[Queue, list[QueueEntry]], None],
) -> int:
    """Apply ``apply(queue, entries)`` to the type's QUEUED tasks page by page (all
    tenants' for a global pause); best effort: PostgreSQL already decided, and the
    claim's refusal and the sweeper's reconcile cover whatever Redis misses."""
    moved = 0
    try:
        for page in _pages(rt, name, None if tenant == GLOBAL else tenant, unpaused_only):
            apply(rt.queue, [QueueEntry.of(t) for t in page])
            moved += len(page)
    except QueueError as exc:
        logger.warning("pause/resume: Redis not updated; claims and the sweeper catch up", extra={"error": str(exc)})
    return moved


def _pages(rt: Container, name: str, tenant: str | None, unpaused_only: bool) -> Iterator[list[Task]]:
    seen = 0
    for page in rt.store.queued_of_type(name, tenant, unpaused_only=unpaused_only):
        yield page
        seen += len(page)
        if seen >= MOVE_MAX:
            return


@dataclass(frozen=True)
class CancelSelection:
    """Which of a tenant's live tasks to cancel: every filter given must match (at least
    one is given); at most ``limit`` a call, oldest first."""

    status: Status | None = None
    name: str | None = None
    priority: str | None = None
    created_before: datetime | None = None
    limit: int = CANCEL_MAX


@dataclass(frozen=True)
class BulkCancelResult:
    cancelled: list[Task]  # were PENDING or QUEUED: now CANCELLED, never run
    requested: list[Task]  # PROCESSING: cancel requested, honoured at the next checkpoint
    more: bool  # more live tasks match: call again


def cancel_many(rt: Container, tenant: str, selection: CancelSelection, *, actor: str) -> BulkCancelResult:
    """Cancel by filter with the rules of a single cancel; the changes, their events,
    webhooks and one ``tasks.cancelled`` audit row commit together."""
    sel = selection
    if sel.status is None and sel.name is None and sel.priority is None and sel.created_before is None:
        raise ValidationError("give status, name, priority or created_before: a bulk cancel never cancels all unasked")
    if sel.status is not None and sel.status not in CANCELLABLE:
        raise ValidationError(
            "status must be WAITING, PENDING, QUEUED or PROCESSING: only live tasks can be cancelled",
            details={"status": sel.status.value},
        )
    rows = rt.store.cancel_tasks(
        tenant,
        status=sel.status.value if sel.status else None,
        name=sel.name,
        priority=sel.priority,
        created_before=sel.created_before,
        limit=sel.limit,
        actor=actor,
    )
    for r in rows:
        metrics.log_cancelled(tenant, r.task, r.before)
    cancelled = [r.task for r in rows if r.task.status is Status.CANCELLED]
    hooks = [QueueEntry.webhook(r.hook.id, tenant, r.hook.enqueued_ms) for r in rows if r.hook is not None]
    _forget(rt, cancelled, hooks)
    if any(t.has_followers for t in cancelled):
        outbox.release_quietly(rt)  # their ends may have released tasks (dependents, a batch's follow-up)
    requested = [r.task for r in rows if r.task.status is not Status.CANCELLED]
    return BulkCancelResult(cancelled, requested, any(r.more for r in rows))


def _forget(rt: Container, cancelled: Sequence[Task], hooks: Sequence[QueueEntry]) -> None:
    try:
        rt.queue.remove([QueueEntry.of(t) for t in cancelled])
        if hooks:
            rt.queue.push(hooks)
    except QueueError:
        pass  # the claim's guard turns the stale ids away; the sweeper pushes the webhooks
