"""Cron arithmetic: zone lookup and fire times.  Pure: no I/O, no clock of its own.

Cron expressions are read by croniter (5 fields, or 6 with seconds last, as croniter
reads them) in the schedule's IANA time zone, so "0 9 * * *" in Europe/Paris stays
at 09:00 local time across daylight-saving changes.  Every result is in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from chalicelib.core.errors import ValidationError


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; a ``ValidationError`` naming the field when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"timezone {name!r} is not an IANA time zone such as UTC or Europe/Paris", details={"field": "timezone"}
        ) from None


def next_fire_times(cron: str, timezone: str, after: datetime, count: int = 1) -> list[datetime]:
    """The next ``count`` ticks strictly after ``after``, in UTC."""
    tz = zone(timezone)
    it = croniter(cron, after.astimezone(tz))
    ticks: list[datetime] = []
    while len(ticks) < count:
        tick = it.get_next(datetime).astimezone(UTC)
        if not _repeat(cron, tick, tz):
            ticks.append(tick)
    return ticks


def latest_tick(cron: str, timezone: str, at_or_before: datetime) -> datetime:
    """The last tick at or before ``at_or_before``, in UTC."""
    tz = zone(timezone)
    it = croniter(cron, (at_or_before + timedelta(microseconds=1)).astimezone(tz))
    while True:
        tick: datetime = it.get_prev(datetime).astimezone(UTC)
        if not _repeat(cron, tick, tz):
            return tick


def _repeat(cron: str, tick: datetime, tz: ZoneInfo) -> bool:
    """Whether ``tick`` is a local time's second occurrence, in the hour the clocks go
    back over, for a cron that names its hours: croniter gives both 01:30s of that night
    for "30 1 * * *", and a daily job would run twice.  As Vixie cron does, such a cron
    fires at the first only; one whose hour field is a wildcard ("*", "*/2") runs on
    through the repeated hour, since it is about elapsed time, not a time of day."""
    local = tick.astimezone(tz)
    return bool(local.fold) and local.replace(fold=0).utcoffset() != local.utcoffset() and _names_hours(cron)


def _names_hours(cron: str) -> bool:
    return not cron.split()[1].startswith("*")  # the hour field, in 5 fields and in 6 (seconds last)
