"""One parser for the instants clients send (``run_at``, ``expires_at``, ``created_before``...).

The document publishes these fields as JSON Schema ``date-time`` (RFC 3339), so every
form RFC 3339 allows must be accepted, including the ones Python's ``fromisoformat``
refuses: a lowercase ``t`` separator or ``z`` zone, and a leap second (``:60``, read as
the last microsecond of that minute, since Python and PostgreSQL have no 61st second).
A time without an offset is UTC (documented).  The result is always in UTC: PostgreSQL
refuses offsets beyond ±15:59 that ISO-8601 allows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from chalicelib.core.errors import ValidationError

# date, separator, hh:mm:60 — the only place a leap second can sit.
_LEAP = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}):60(?:\.\d+)?")


def parse_instant(value: object, field: str) -> datetime:
    """``value`` as an aware UTC datetime; a ``ValidationError`` naming ``field`` otherwise."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be an ISO-8601 timestamp", details={"field": field})
    text = value.strip()
    leap = _LEAP.match(text)
    if leap:
        text = f"{leap.group(1)}:59.999999{text[leap.end() :]}"
    if len(text) > 10 and text[10] in "t ":
        text = f"{text[:10]}T{text[11:]}"
    if text.endswith(("Z", "z")):
        text = f"{text[:-1]}+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{field} must be ISO-8601 such as 2030-01-01T09:00:00Z, got {value[:64]!r}",
            details={"field": field},
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError(
            f"{field} is out of range: an ISO-8601 timestamp in UTC lies in the years 1 to 9999",
            details={"field": field},
        ) from None
