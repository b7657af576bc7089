"""A schedule request: the spec a client asks for, validated from a request body
(the spec and the stored ``Schedule`` are records in ``chalicelib.core.records``).
Pure: no I/O.

Catch-up after downtime (the sweeper did not run when ticks fell due): ``once``
fires a single task for the latest missed tick; ``skip`` fires nothing for ticks
older than the grace period and waits for the next one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from croniter import CroniterError, croniter

from chalicelib.config import Settings
from chalicelib.core import cron as crontab
from chalicelib.core.errors import ValidationError
from chalicelib.core.records import ScheduleSpec
from chalicelib.core.requests import TaskTypes, parse_task, validate


def check_cron(cron: Any, timezone: str) -> str:
    """A cron expression croniter reads and that fires at all ("0 0 31 2 *" parses
    but names no date, and croniter raises when asked for its next tick).

    A cron finer than the sweep interval, down to every second, is accepted on
    purpose: each sweep fires the latest due tick once (catch-up "once"), so it
    means "on every sweep", with no pile-up of missed ticks.

    Returned with its fields one space apart: a tab or a newline between them (which
    croniter reads too) is not kept, nor shown back, as part of the schedule."""
    if isinstance(cron, str):
        cron = " ".join(cron.split())
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
    body: Any, settings: Settings, registry: TaskTypes, *, current: ScheduleSpec | None = None
) -> ScheduleSpec:
    """Validate a schedule body; with ``current`` (PATCH) absent fields keep their value."""
    validate("ScheduleUpdate" if current else "ScheduleSubmission", body, what="the schedule")
    name = body.get("name", current.name if current else None)
    timezone = body.get("timezone", current.timezone if current else "UTC")
    crontab.zone(timezone)
    cron = check_cron(body.get("cron", current.cron if current else None), timezone)
    enabled = body.get("enabled", current.enabled if current else True)
    catch_up = body.get("catch_up", current.catch_up if current else "once")
    if "task" in body:
        request = parse_task(body["task"], settings, registry, where="task: ", schema="ScheduleTask")
        task = (request.name, request.payload, request.priority.value, request.max_retries, request.timeout_seconds)
    elif current is not None:
        task = (current.task_name, current.payload, current.priority, current.max_retries, current.timeout_seconds)
    else:  # pragma: no cover - the schema requires task on create
        raise ValidationError("task is required")
    return ScheduleSpec(name, cron, timezone, *task, enabled=enabled, catch_up=catch_up)
