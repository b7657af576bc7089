"""Sweep use case: idempotent housekeeping, safe to run many at once.

1. Copy the tenants' weights and running quotas to Redis (``tenant_limits``), and
   rebuild Redis from PostgreSQL when the sentinel key is gone (restart, flush):
   per queue partition, each with its own sentinel.
2. Promote due PENDING tasks (scheduled, or waiting for a retry) to QUEUED.
3. Rescue tasks whose lease expired (the worker died or stalled): the attempt
   counts as failed, so the task retries or is dead-lettered.
   Then push the tasks triggers released (the outbox; services/outbox.py).
4. Return ids stuck in the Redis lease set whose claim never reached PostgreSQL.
5. Reconcile: QUEUED rows older than a grace period are re-added to the ready set
   (a submit whose Redis push failed); ZADD NX keeps this harmless when present.
   Tasks of a paused type are left out here and in the rebuild (and promoted
   without a push): they wait in PostgreSQL only until resume pushes them.
6. Archive: move COMPLETED and CANCELLED tasks past the idempotency window (at least
   a day) to ``tasks_archive``, a page of ARCHIVE_PAGE a transaction, and drop its day
   partitions past retention, one a transaction (migration 0027); make its partitions
   ahead.  ``tasks`` keeps the live tasks and about a day of finished ones.
   Then prune, row by row, the COMPLETED and CANCELLED tasks past retention that could
   not move (those with dependency edges, ids SQL made, ...; counted and logged), then
   the completed batches none of whose tasks is left, forget expired idempotency
   keys and drop unique keys whose window passed.
   FAILED tasks, the dead-letter queue, are never pruned: they stay until
   redriven or purged on purpose.
7. Keep ``task_events``' day partitions: create the next days' ahead of time and
   drop, one a transaction, those past retention (the history of tasks still
   present, dead letters among them, is kept; migration 0019).

Concurrency safety comes from PostgreSQL (``FOR UPDATE SKIP LOCKED`` and guarded
UPDATEs) and from Redis writes that are idempotent (ZADD NX, ZREM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from chalicelib.container import Container
from chalicelib.core.errors import LeaseLostError, QueueError, UnavailableError
from chalicelib.core.model import Outcome, QueueEntry, Status
from chalicelib.core.records import ExpiredLease, LiveTask, ReadyTask
from chalicelib.execution.outcomes import failure_outcome
from chalicelib.observability import metrics
from chalicelib.observability.log import logger
from chalicelib.services import deadlines, outbox, schedules, tenants

PAGE = 1000
# Finished tasks moved to tasks_archive a transaction, and at most this many pages a
# sweep, so that one sweep's archiving stays bounded (about 50-100 ms a page).
ARCHIVE_PAGE = 1000
ARCHIVE_PAGES_PER_SWEEP = 20
# Finished tasks stay in `tasks` at least this long: today's stats (since 00:00 UTC)
# read `tasks` only, and idempotency keys are looked up there.
ARCHIVE_AFTER_SECONDS = 86400.0
# Archive partitions made ahead; tasks move a day after they finish at the earliest,
# so one day ahead is already a day of margin.
ARCHIVE_PARTITION_DAYS_AHEAD = 2
# Day partitions of task_events made ahead of time: a sweeper down for this long
# still finds them; past it, rows go to the DEFAULT partition (inserts never fail)
# and move into their day's partition when it is made.
EVENT_PARTITION_DAYS_AHEAD = 3


@dataclass
class SweepReport:
    rebuilt: bool = False
    rebuilt_partitions: list[int] = field(default_factory=list)
    scheduled: int = 0
    promoted: int = 0
    expired: int = 0
    rescued: int = 0
    dead_lettered: int = 0
    requeued_leases: int = 0
    reconciled: int = 0
    released: int = 0
    pruned: int = 0
    archived: int = 0
    archive_partitions_created: int = 0
    archive_partitions_dropped: list[str] = field(default_factory=list)
    event_partitions_created: int = 0
    event_partitions_dropped: list[str] = field(default_factory=list)
    tenants_configured: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep(rt: Container, *, actor: str = "sweep") -> SweepReport:
    """One sweep.  A failing step is logged and the others still run."""
    report = SweepReport()
    steps = (
        _sync_tenants,  # before the rebuild: quotas are back before the ready sets
        _rebuild,
        _fire_schedules,
        _expire,
        _promote,
        _rescue,
        _release_outbox,
        _requeue_orphan_leases,
        _reconcile,
        _archive,  # before _prune: what can move goes by partition, not by row deletes
        _prune,
        _event_partitions,
    )
    for step in steps:
        try:
            step(rt, report, actor)
        except UnavailableError as exc:
            report.errors.append(f"{step.__name__.strip('_')}: {exc}")
            logger.warning("sweep step failed", extra={"step": step.__name__, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug in one step must not skip the others, every sweep
            report.errors.append(f"{step.__name__.strip('_')}: {type(exc).__name__}: {exc}")
            logger.exception("sweep step failed unexpectedly", extra={"step": step.__name__})
    metrics.fold(rt.store)
    try:
        rt.queue.mark_swept()
    except QueueError as exc:  # freshness marker only; Redis errors are reported above
        logger.debug("could not record sweep time", extra={"error": str(exc)})
    return report


def _ready(task: ReadyTask | LiveTask) -> QueueEntry:
    """The ready entry of a QUEUED task."""
    return QueueEntry.ready(task.id, task.tenant, task.priority, task.enqueued_ms, task.name)


def _rebuild(rt: Container, report: SweepReport, actor: str) -> None:
    # Per queue partition: in a cluster one master can lose one partition's slot, and
    # only that partition (its own sentinel gone with it) is rebuilt.
    lost = rt.queue.lost_partitions()
    if not lost:
        return
    # The sentinel goes in first: if Redis is flushed again mid-rebuild, the next
    # sweep sees it missing and rebuilds once more.
    rt.queue.mark_rebuilt(lost)
    counts = {"ready": 0, "delayed": 0, "leases": 0}
    # Leases first: their concurrency and running slots must be back before a claim can
    # see the ready ids, or a type or tenant could run past its limit meanwhile.
    for page in rt.store.live_tasks(Status.PROCESSING, page_size=PAGE * 5):
        # A PROCESSING row always has a lease deadline (the claim sets both).
        rt.queue.lease_all(((t.id, t.lease_ms or 0.0, t.name, t.tenant) for t in page), partitions=lost)
        counts["leases"] += len(page)
    for page in rt.store.live_tasks(Status.QUEUED, page_size=PAGE * 5):
        rt.queue.push([_ready(t) for t in page], only_new=True, partitions=lost)
        counts["ready"] += len(page)
    for page in rt.store.live_tasks(Status.PENDING, page_size=PAGE * 5):
        due = [QueueEntry.due_at(t.id, t.tenant, t.priority, t.run_at_ms, t.name) for t in page]
        rt.queue.push(due, only_new=True, partitions=lost)
        counts["delayed"] += len(page)
    report.rebuilt = True
    report.rebuilt_partitions = lost
    logger.info("rebuilt Redis from PostgreSQL", extra={**counts, "partitions": lost})


def _sync_tenants(rt: Container, report: SweepReport, actor: str) -> None:
    report.tenants_configured = tenants.sync_to_queue(rt)


def _fire_schedules(rt: Container, report: SweepReport, actor: str) -> None:
    report.scheduled += len(schedules.fire_due(rt, actor=actor))


def _expire(rt: Container, report: SweepReport, actor: str) -> None:
    report.expired += deadlines.expire_due(rt, actor=actor)


def _promote(rt: Container, report: SweepReport, actor: str) -> None:
    while True:
        promoted = rt.store.promote_due(limit=PAGE, actor=actor)
        if promoted:
            try:
                # Out of delayed (a drainer may have moved some already), into ready.
                entries = [_ready(t) for t in promoted]
                rt.queue.remove(entries)
                # A paused type's tasks wait in PostgreSQL only; resume pushes them.
                rt.queue.push([e for e, t in zip(entries, promoted, strict=True) if not t.paused])
            except QueueError as exc:
                # Committed as QUEUED already: reconciliation pushes them once Redis is back.
                report.errors.append(f"promote: {exc}")
        report.promoted += len(promoted)
        if len(promoted) < PAGE:
            return


def _rescue(rt: Container, report: SweepReport, actor: str) -> None:
    def decide(lease: ExpiredLease) -> Outcome:
        exc = LeaseLostError("lease expired: the worker died, stalled or ran past its timeout")
        return failure_outcome(rt.retry, lease.id, lease.lease_token, lease.attempts, lease.max_retries, exc)

    while True:
        rows = rt.store.rescue_expired(decide, limit=PAGE, actor=actor)
        if rows:
            requeue = [
                QueueEntry.due_at(r.id, r.tenant, r.priority, r.run_at_ms, r.name)
                for r in rows
                if r.status is Status.PENDING
            ]
            report.rescued += len(rows)
            report.dead_lettered += sum(1 for r in rows if r.status is Status.FAILED)
            metrics.log_rescued(rows)
            requeue += [
                QueueEntry.webhook(r.hook_id, r.tenant, r.hook_enqueued_ms)
                for r in rows
                if r.hook_id is not None and r.hook_enqueued_ms is not None
            ]
            try:
                rt.queue.ack(
                    [r.id for r in rows], requeue, {r.id: r.name for r in rows}, {r.id: r.tenant for r in rows}
                )
            except QueueError as exc:
                report.errors.append(f"rescue ack: {exc}")
        if len(rows) < PAGE:
            return


def _release_outbox(rt: Container, report: SweepReport, actor: str) -> None:
    # The safety net for tasks a trigger released whose push did not happen (the
    # drainer died, Redis was away); also those the rescue above just released.
    report.released += outbox.release(rt)


def _requeue_orphan_leases(rt: Container, report: SweepReport, actor: str) -> None:
    ids = rt.queue.expired_leases(PAGE)
    if not ids:
        return
    states = rt.store.statuses_of(ids)
    by_id = {t.id: t for t in states}
    back = [
        QueueEntry.ready(t.id, t.tenant, t.priority, t.enqueued_ms, t.name)
        for t in states
        if t.status is Status.QUEUED and t.enqueued_ms is not None and not t.paused
    ]
    # PROCESSING ones are PostgreSQL's to rescue (step 3); anything else is done with.
    done = [tid for tid in ids if tid not in by_id or by_id[tid].status is not Status.PROCESSING]
    # The leases go before the ids go back (a claim takes an id of a limited type with a
    # live lease for a duplicate); one that does not go back, the reconcile pushes later.
    rt.queue.ack(
        done, names={tid: t.name for tid, t in by_id.items()}, tenants={tid: t.tenant for tid, t in by_id.items()}
    )
    rt.queue.push(back, only_new=True)
    report.requeued_leases += len(back)


def _reconcile(rt: Container, report: SweepReport, actor: str) -> None:
    grace = max(2.0, rt.settings.sweep_interval_seconds)
    stuck = rt.store.queued_older_than(grace, limit=PAGE * 5)
    if stuck:
        rt.queue.push([_ready(t) for t in stuck], only_new=True)
        report.reconciled += len(stuck)


def _archive(rt: Container, report: SweepReport, actor: str) -> None:
    s = rt.settings
    retention = s.retention_days * 86400
    report.archive_partitions_created = rt.store.ensure_archive_partitions(retention, ARCHIVE_PARTITION_DAYS_AHEAD)
    after = max(ARCHIVE_AFTER_SECONDS, s.idempotency_window_hours * 3600)
    for _ in range(ARCHIVE_PAGES_PER_SWEEP):
        page = rt.store.archive_finished(after, page_size=ARCHIVE_PAGE)
        if page is None:  # another sweeper is moving
            break
        report.archived += page[0]
        if not page[1]:
            break
    while dropped := rt.store.drop_archive_partition(retention):
        report.archive_partitions_dropped.append(dropped)
    if report.archived or report.archive_partitions_dropped:
        logger.info(
            "archived finished tasks",
            extra={
                "event": "archive",
                "archived": report.archived,
                "partitions_dropped": report.archive_partitions_dropped,
            },
        )


def _prune(rt: Container, report: SweepReport, actor: str) -> None:
    s = rt.settings
    report.pruned = rt.store.prune_finished(s.retention_days * 86400)
    metrics.log_pruned(report.pruned, s.retention_days)
    rt.store.prune_batches(s.retention_days * 86400)  # those whose tasks are all gone
    rt.store.prune_workflows(s.retention_days * 86400)  # likewise
    rt.store.forget_idempotency_keys(s.idempotency_window_hours * 3600)
    # Only housekeeping: a submit takes over a key whose window passed by itself.
    rt.store.prune_unique_keys()


def _event_partitions(rt: Container, report: SweepReport, actor: str) -> None:
    report.event_partitions_created = rt.store.ensure_event_partitions(EVENT_PARTITION_DAYS_AHEAD)
    while dropped := rt.store.drop_event_partition(rt.settings.retention_days * 86400):
        report.event_partitions_dropped.append(dropped)
    if report.event_partitions_dropped:
        logger.info(
            "dropped task_events partitions past retention",
            extra={"event": "prune_events", "partitions": report.event_partitions_dropped},
        )
