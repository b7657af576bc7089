"""A schedule request: the spec a client asks for, validated from a request body
(the spec and the stored ``Schedule`` are records in ``chalicelib.core.records``).
Pure: no I/O.

Catch-up after downtime (the sweeper did not run when ticks fell due): ``once``
fires a single task for the latest missed tick; ``skip`` fires nothing for ticks
older than the grace period and waits for the next one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from croniter import CroniterError, croniter

from chalicelib.config import Settings
from chalicelib.core import cron as crontab
from chalicelib.core.errors import ValidationError
from chalicelib.core.records import ScheduleSpec
from chalicelib.core.requests import check_fields, parse_task

if TYPE_CHECKING:
    from chalicelib.tasktypes import Registry

SCHEDULE_FIELDS = frozenset({"name", "cron", "timezone", "task", "enabled", "catch_up"})
TASK_FIELDS = frozenset({"name", "payload", "priority", "max_retries", "timeout_seconds"})
CATCH_UP = ("once", "skip")
MAX_CRON_LENGTH = 200


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
        crontab.next_fire_times(cron, timezone, datetime.now(UTC))
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
    crontab.zone(timezone)
    cron = check_cron(cron, timezone)
    enabled = body.get("enabled", current.enabled if current else True)
    if not isinstance(enabled, bool):
        raise ValidationError("enabled must be a boolean", details={"field": "enabled"})
    catch_up = body.get("catch_up", current.catch_up if current else "once")
    if catch_up not in CATCH_UP:
        raise ValidationError("catch_up must be once or skip", details={"field": "catch_up"})

    if "task" in body:
        task = _task_part(body["task"], settings, registry)
    elif current is not None:
        task = (current.task_name, current.payload, current.priority, current.max_retries, current.timeout_seconds)
    else:  # pragma: no cover - guarded by the missing-field check
        raise ValidationError("task is required")
    return ScheduleSpec(name, cron, timezone, *task, enabled=enabled, catch_up=catch_up)


def _task_part(task_body: Any, settings: Settings, registry: Registry) -> tuple[str, dict[str, Any], str, int, int]:
    if not isinstance(task_body, dict):
        raise ValidationError("task must be a JSON object", details={"field": "task"})
    extra = sorted(set(task_body) - TASK_FIELDS)
    if extra:
        raise ValidationError(
            f"unknown task field(s) {', '.join(extra)}; allowed: {', '.join(sorted(TASK_FIELDS))}",
            details={"fields": extra},
        )
    request = parse_task(task_body, settings, registry, where="task: ")
    return request.name, request.payload, request.priority.value, request.max_retries, request.timeout_seconds
