"""Cron schedules: validation, fire-time arithmetic, and the sweeper's firing step.

Cron expressions are parsed by croniter (5 fields, or 6 with seconds last, as
croniter reads them) in the schedule's IANA time zone, so "0 9 * * *" in
Europe/Paris stays at 09:00 local time across daylight-saving changes.

Catch-up after downtime (the sweeper did not run when ticks fell due):
``once`` fires a single task for the latest missed tick; ``skip`` fires nothing
for ticks older than the grace period and waits for the next one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from chalicelib.adapters.redis.queue import Item
from chalicelib.config import Settings
from chalicelib.container import Container
from chalicelib.core.errors import ConflictError, NotFoundError, QueueError, ValidationError
from chalicelib.core.model import Task
from chalicelib.core.records import Schedule, ScheduleRun, ScheduleSpec
from chalicelib.core.requests import check_fields, parse_task
from chalicelib.observability.log import logger
from chalicelib.tasktypes import Registry

SCHEDULE_FIELDS = frozenset({"name", "cron", "timezone", "task", "enabled", "catch_up"})
TASK_FIELDS = frozenset({"name", "payload", "priority", "max_retries", "timeout_seconds"})
CATCH_UP = ("once", "skip")
MAX_CRON_LENGTH = 200


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"timezone {name!r} is not an IANA time zone such as UTC or Europe/Paris", details={"field": "timezone"}
        ) from None


def next_fire_times(cron: str, timezone: str, after: datetime, count: int = 1) -> list[datetime]:
    """The next ``count`` ticks strictly after ``after``, in UTC."""
    it = croniter(cron, after.astimezone(_zone(timezone)))
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


def latest_tick(cron: str, timezone: str, at_or_before: datetime) -> datetime:
    """The last tick at or before ``at_or_before``, in UTC."""
    it = croniter(cron, (at_or_before + timedelta(microseconds=1)).astimezone(_zone(timezone)))
    return it.get_prev(datetime).astimezone(UTC)  # type: ignore[no-any-return]


def check_cron(cron: Any, timezone: str) -> str:
    """A cron expression croniter reads and that fires at all ("0 0 31 2 *" parses
    but names no date, and croniter raises when asked for its next tick).

    A cron finer than the sweep interval, down to every second, is accepted on
    purpose: each sweep fires the latest due tick once (catch-up "once"), so it
    means "on every sweep", with no pile-up of missed ticks."""
    if isinstance(cron, str) and len(cron) > MAX_CRON_LENGTH:
        raise ValidationError(f"cron must be at most {MAX_CRON_LENGTH} characters", details={"field": "cron"})
    if not isinstance(cron, str) or len(cron.split()) not in (5, 6) or not _readable(cron):
        raise ValidationError(
            f"cron {cron!r} is not a valid cron expression (5 fields, or 6 with seconds last)",
            details={"field": "cron"},
        )
    try:
        next_fire_times(cron, timezone, datetime.now(UTC))
    except (CroniterError, ValueError, OverflowError):
        raise ValidationError(
            f"cron {cron!r} never fires (it names a date that does not exist, such as 31 February)",
            details={"field": "cron"},
        ) from None
    return cron


def _readable(cron: str) -> bool:
    try:
        return bool(croniter.is_valid(cron))
    except (CroniterError, ValueError, OverflowError, TypeError, KeyError, IndexError):
        return False


def parse_schedule(
    body: Any, settings: Settings, registry: Registry, *, current: ScheduleSpec | None = None
) -> ScheduleSpec:
    """Validate a schedule body; with ``current`` (PATCH) absent fields keep their value."""
    if not isinstance(body, dict):
        raise ValidationError("the schedule must be a JSON object")
    check_fields(body, SCHEDULE_FIELDS)
    if current is None:
        missing = [f for f in ("name", "cron", "task") if f not in body]
        if missing:
            raise ValidationError(f"missing field(s) {', '.join(missing)}", details={"fields": missing})

    name = body.get("name", current.name if current else None)
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise ValidationError("name must be a string of 1 to 200 characters", details={"field": "name"})
    cron = body.get("cron", current.cron if current else None)
    timezone = body.get("timezone", current.timezone if current else "UTC")
    if not isinstance(timezone, str):
        raise ValidationError("timezone must be a string", details={"field": "timezone"})
    _zone(timezone)
    cron = check_cron(cron, timezone)
    enabled = body.get("enabled", current.enabled if current else True)
    if not isinstance(enabled, bool):
        raise ValidationError("enabled must be a boolean", details={"field": "enabled"})
    catch_up = body.get("catch_up", current.catch_up if current else "once")
    if catch_up not in CATCH_UP:
        raise ValidationError("catch_up must be once or skip", details={"field": "catch_up"})

    if "task" in body:
        task_body = body["task"]
        if not isinstance(task_body, dict):
            raise ValidationError("task must be a JSON object", details={"field": "task"})
        extra = sorted(set(task_body) - TASK_FIELDS)
        if extra:
            raise ValidationError(
                f"unknown task field(s) {', '.join(extra)}; allowed: {', '.join(sorted(TASK_FIELDS))}",
                details={"fields": extra},
            )
        request = parse_task(task_body, settings, registry, where="task: ")
        task = (
            request.name,
            request.payload,
            request.priority.value,
            request.max_retries,
            request.timeout_seconds,
        )
    elif current is not None:
        task = (current.task_name, current.payload, current.priority, current.max_retries, current.timeout_seconds)
    else:  # pragma: no cover - guarded by the missing-field check
        raise ValidationError("task is required")
    return ScheduleSpec(name, cron, timezone, *task, enabled=enabled, catch_up=catch_up)


def to_dict(schedule: Schedule, *, upcoming: int = 0, runs: list[ScheduleRun] | None = None) -> dict[str, Any]:
    spec = schedule.spec
    out: dict[str, Any] = {
        "id": schedule.id,
        "name": spec.name,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "task": {
            "name": spec.task_name,
            "payload": spec.payload,
            "priority": spec.priority,
            "max_retries": spec.max_retries,
            "timeout_seconds": spec.timeout_seconds,
        },
        "enabled": spec.enabled,
        "catch_up": spec.catch_up,
        "next_fire_at": schedule.next_fire_at.isoformat(),
        "last_fired_at": schedule.last_fired_at.isoformat() if schedule.last_fired_at else None,
        "created_at": schedule.created_at.isoformat(),
        "updated_at": schedule.updated_at.isoformat(),
    }
    if upcoming:
        ticks = next_fire_times(spec.cron, spec.timezone, schedule.next_fire_at, upcoming - 1)
        out["next_fire_times"] = [t.isoformat() for t in [schedule.next_fire_at, *ticks]]
    if runs is not None:
        out["recent_runs"] = [
            {"fire_at": r.fire_at.isoformat(), "task_id": r.task_id, "status": r.status.value if r.status else None}
            for r in runs
        ]
    return out


# --- use cases ----------------------------------------------------------------------------


def create(rt: Container, tenant: str, body: Any) -> dict[str, Any]:
    spec = parse_schedule(body, rt.settings, rt.registry)
    first = next_fire_times(spec.cron, spec.timezone, datetime.now(UTC))[0]
    schedule = rt.store.insert_schedule(tenant, str(uuid.uuid4()), spec, first)
    if schedule is None:
        raise ConflictError(f"a schedule named {spec.name!r} already exists", details={"field": "name"})
    return to_dict(schedule, upcoming=5)


def _get_schedule(rt: Container, tenant: str, schedule_id: str) -> Schedule:
    schedule = rt.store.get_schedule(tenant, schedule_id)
    if schedule is None:
        raise NotFoundError(f"no schedule {schedule_id}")
    return schedule


def get(rt: Container, tenant: str, schedule_id: str) -> dict[str, Any]:
    schedule = _get_schedule(rt, tenant, schedule_id)
    return to_dict(schedule, upcoming=5, runs=rt.store.schedule_runs(schedule_id, limit=10))


def list_all(rt: Container, tenant: str) -> dict[str, Any]:
    return {"items": [to_dict(r) for r in rt.store.list_schedules(tenant)]}


def update(rt: Container, tenant: str, schedule_id: str, body: Any) -> dict[str, Any]:
    schedule = _get_schedule(rt, tenant, schedule_id)
    current = schedule.spec
    spec = parse_schedule(body, rt.settings, rt.registry, current=current)
    next_fire_at = schedule.next_fire_at
    if (spec.cron, spec.timezone) != (current.cron, current.timezone) or (spec.enabled and not current.enabled):
        next_fire_at = next_fire_times(spec.cron, spec.timezone, datetime.now(UTC))[0]
    updated = rt.store.update_schedule(tenant, schedule_id, spec, next_fire_at)
    if updated is None:
        raise NotFoundError(f"no schedule {schedule_id}")
    return to_dict(updated, upcoming=5)


def delete(rt: Container, tenant: str, schedule_id: str) -> None:
    if not rt.store.delete_schedule(tenant, schedule_id):
        raise NotFoundError(f"no schedule {schedule_id}")


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

    created = rt.store.fire_due_schedules(plan, actor=actor)
    if created:
        try:
            ready: list[Item] = [
                (t.id, t.priority, t.enqueued_at.timestamp() * 1000, t.name) for t in created if t.enqueued_at
            ]
            rt.queue.push(ready)
        except QueueError as exc:
            logger.warning("scheduled tasks persisted; Redis push failed", extra={"error": str(exc)})
    return created
