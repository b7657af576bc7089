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
    it = croniter(cron, after.astimezone(zone(timezone)))
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


def latest_tick(cron: str, timezone: str, at_or_before: datetime) -> datetime:
    """The last tick at or before ``at_or_before``, in UTC."""
    it = croniter(cron, (at_or_before + timedelta(microseconds=1)).astimezone(zone(timezone)))
    return it.get_prev(datetime).astimezone(UTC)  # type: ignore[no-any-return]
