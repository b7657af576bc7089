"""Every RFC 3339 date-time the document promises is accepted, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.core.errors import ValidationError
from chalicelib.core.instants import parse_instant


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01T09:00:00Z", datetime(2030, 1, 1, 9, tzinfo=UTC)),
        ("2030-01-01t09:00:00z", datetime(2030, 1, 1, 9, tzinfo=UTC)),  # RFC 3339 allows lowercase
        ("2030-01-01 09:00:00", datetime(2030, 1, 1, 9, tzinfo=UTC)),  # no offset: UTC
        ("2030-01-01T10:00:00+01:00", datetime(2030, 1, 1, 9, tzinfo=UTC)),
        ("8357-06-30T23:59:60Z", datetime(8357, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)),  # leap second
        ("2030-06-30T23:59:60.5+00:00", datetime(2030, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2030-01-01T00:00:00.123456789Z", datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_rfc3339_forms_are_accepted(text: str, expected: datetime) -> None:
    assert parse_instant(text, "run_at") == expected


@pytest.mark.parametrize(
    "text", ["", "tomorrow", "2030-13-01T00:00:00Z", "2030-01-01T24:61:00Z", "0001-01-01T00:00:00+01:00"]
)
def test_nonsense_is_a_400_naming_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_instant(text, "created_before")
    assert err.value.details == {"field": "created_before"}


def test_not_a_string_is_a_400() -> None:
    with pytest.raises(ValidationError):
        parse_instant(20300101, "expires_at")
