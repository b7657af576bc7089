"""Cron schedule use cases: create, read, revise and delete a tenant's schedules, and
the sweeper's firing step.  Specs arrive validated (``chalicelib.core.schedules``);
results are ``Schedule`` records, rendered by the API layer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadCronError, CroniterBadDateError

from chalicelib.container import Container
from chalicelib.core.audit import AuditAction
from chalicelib.core.cron import latest_tick, next_fire_times
from chalicelib.core.errors import ConflictError, NotFoundError, QueueError, ValidationError
from chalicelib.core.model import QueueEntry, Task
from chalicelib.core.records import Schedule, ScheduleRun, ScheduleSpec
from chalicelib.observability.log import logger

UPCOMING = 5  # fire times shown with one schedule
RECENT_RUNS = 10  # runs shown with one schedule


@dataclass(frozen=True)
class ScheduleDetail:
    """One schedule with its next fire times and, when read, its latest runs."""

    schedule: Schedule
    upcoming: list[datetime]
    runs: list[ScheduleRun] | None = None  # newest first


def _detail(schedule: Schedule, runs: list[ScheduleRun] | None = None) -> ScheduleDetail:
    s = schedule.spec
    later = next_fire_times(s.cron, s.timezone, schedule.next_fire_at, UPCOMING - 1)
    return ScheduleDetail(schedule, [schedule.next_fire_at, *later], runs)


def create(rt: Container, tenant: str, spec: ScheduleSpec, *, actor: str) -> ScheduleDetail:
    """Create a schedule; ``actor`` is who the audit row names (every change below too)."""
    first = next_fire_times(spec.cron, spec.timezone, datetime.now(UTC))[0]
    schedule = rt.store.insert_schedule(tenant, str(uuid.uuid4()), spec, first, actor=actor)
    if schedule is None:
        raise ConflictError(f"a schedule named {spec.name!r} already exists", details={"field": "name"})
    return _detail(schedule)


def _get(rt: Container, tenant: str, schedule_id: str) -> Schedule:
    schedule = rt.store.get_schedule(tenant, schedule_id)
    if schedule is None:
        raise NotFoundError(f"no schedule {schedule_id}")
    return schedule


def get(rt: Container, tenant: str, schedule_id: str) -> ScheduleDetail:
    schedule = _get(rt, tenant, schedule_id)
    return _detail(schedule, rt.store.schedule_runs(schedule_id, limit=RECENT_RUNS))


def list_all(rt: Container, tenant: str) -> list[Schedule]:
    return rt.store.list_schedules(tenant)


def update(
    rt: Container, tenant: str, schedule_id: str, revise: Callable[[ScheduleSpec], ScheduleSpec], *, actor: str
) -> ScheduleDetail:
    """Apply ``revise`` (the PATCH, parsed against the current spec) and store the result.

    The next fire time is recomputed only when the timing changed or the schedule was
    switched on, so an unrelated edit never skips or repeats a tick."""
    current = _get(rt, tenant, schedule_id)
    spec = revise(current.spec)
    before = current.spec
    next_fire_at = current.next_fire_at
    if (spec.cron, spec.timezone) != (before.cron, before.timezone) or (spec.enabled and not before.enabled):
        next_fire_at = next_fire_times(spec.cron, spec.timezone, datetime.now(UTC))[0]
    changed = changed_fields(before, spec)
    action = audit_action(before, spec)
    updated = rt.store.update_schedule(
        tenant, schedule_id, spec, next_fire_at, actor=actor, action=action, changed=changed
    )
    if updated is None:
        raise NotFoundError(f"no schedule {schedule_id}")
    return _detail(updated)


def changed_fields(before: ScheduleSpec, after: ScheduleSpec) -> list[str]:
    """The names of the spec's fields a revision changed (for the audit row)."""
    return [f.name for f in fields(ScheduleSpec) if getattr(before, f.name) != getattr(after, f.name)]


def audit_action(before: ScheduleSpec, after: ScheduleSpec) -> AuditAction:
    """Switching a schedule on or off is what an operator looks for in the log, so it
    names the entry even when other fields changed too (they are in its details)."""
    if after.enabled and not before.enabled:
        return AuditAction.SCHEDULE_ENABLED
    if before.enabled and not after.enabled:
        return AuditAction.SCHEDULE_DISABLED
    return AuditAction.SCHEDULE_UPDATED


def delete(rt: Container, tenant: str, schedule_id: str, *, actor: str) -> None:
    if not rt.store.delete_schedule(tenant, schedule_id, actor=actor):
        raise NotFoundError(f"no schedule {schedule_id}")


# Due schedules locked, fired and advanced a transaction; at most so many pages a sweep
# (the rest wait for the next sweep).
SCHEDULE_PAGE = 100
SCHEDULE_PAGES_PER_SWEEP = 50


def fire_due(rt: Container, *, actor: str = "sweep") -> list[Task]:
    """The sweeper's step: fire due ticks (exactly once each) and push their tasks."""
    grace = timedelta(seconds=rt.settings.schedule_grace_seconds)

    def plan(schedule: Schedule, now: datetime) -> tuple[datetime | None, datetime]:
        spec = schedule.spec
        try:
            latest = latest_tick(spec.cron, spec.timezone, now)
            following = next_fire_times(spec.cron, spec.timezone, now)[0]
        except (CroniterBadCronError, CroniterBadDateError, ValidationError) as exc:
            logger.warning("schedule cannot be evaluated", extra={"schedule_id": schedule.id, "error": str(exc)})
            return None, now + timedelta(days=1)
        # Only the latest due tick fires, however many were missed (catch-up "once").
        fire_at = max(latest, schedule.next_fire_at)
        if spec.catch_up == "skip" and now - fire_at > grace:
            return None, following
        return fire_at, following

    # Page after page while pages come back full: a schedule left for the next sweep
    # would by then have a newer tick due, and catch-up "once" fires only that one, so
    # the tick it was due for was lost (250 every-minute schedules fired 100 a sweep).
    created: list[Task] = []
    for _ in range(SCHEDULE_PAGES_PER_SWEEP):
        planned = 0

        def counted(schedule: Schedule, now: datetime) -> tuple[datetime | None, datetime]:
            nonlocal planned
            planned += 1
            return plan(schedule, now)

        page = rt.store.fire_due_schedules(counted, limit=SCHEDULE_PAGE, actor=actor)
        if page:
            try:
                rt.queue.push([QueueEntry.of(t) for t in page])
            except QueueError as exc:
                logger.warning("scheduled tasks persisted; Redis push failed", extra={"error": str(exc)})
        created += page
        if planned < SCHEDULE_PAGE:
            break
    return created
