from datetime import UTC, datetime

import pytest

from chalicelib.config import Settings
from chalicelib.core.cron import latest_tick, next_fire_times
from chalicelib.core.errors import ValidationError
from chalicelib.core.schedules import parse_schedule
from chalicelib.tasktypes import load_builtin_task_types

REG = load_builtin_task_types()
SET = Settings()


def test_next_fire_times_follow_local_time_across_dst() -> None:
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    before_switch = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    ticks = next_fire_times("0 9 * * *", "Europe/Paris", before_switch, 2)
    assert [t.hour for t in ticks] == [7, 7]
    winter = next_fire_times("0 9 * * *", "Europe/Paris", datetime(2026, 1, 10, tzinfo=UTC))[0]
    assert winter.hour == 8


def test_a_cron_naming_its_hour_fires_once_on_the_night_the_clocks_go_back() -> None:
    """01:30 happens twice in New York on 2024-11-03 (EDT, then EST); croniter gives
    both, and a daily job ran twice.  As in Vixie cron: the first only."""
    night = datetime(2024, 11, 3, 4, 0, tzinfo=UTC)
    ticks = next_fire_times("30 1 * * *", "America/New_York", night, 2)
    assert [t.isoformat() for t in ticks] == ["2024-11-03T05:30:00+00:00", "2024-11-04T06:30:00+00:00"]
    after_both = datetime(2024, 11, 3, 7, 0, tzinfo=UTC)
    assert latest_tick("30 1 * * *", "America/New_York", after_both) == ticks[0]
    assert latest_tick("30 1 * * * 15", "America/New_York", after_both).isoformat() == "2024-11-03T05:30:15+00:00"


def test_a_cron_with_a_wildcard_hour_runs_on_through_the_repeated_hour() -> None:
    night = datetime(2024, 11, 3, 4, 0, tzinfo=UTC)
    hourly = next_fire_times("0 * * * *", "America/New_York", night, 4)
    assert [t.hour for t in hourly] == [5, 6, 7, 8]  # 01:00 EDT, 01:00 EST, 02:00, 03:00
    ranged = next_fire_times("30 1-2 * * *", "America/New_York", night, 2)
    assert [t.hour for t in ranged] == [5, 7]  # named hours: 01:30 EDT, then 02:30 EST


def test_latest_tick_includes_an_exact_tick() -> None:
    at = datetime(2026, 5, 1, 10, 15, tzinfo=UTC)
    assert latest_tick("*/15 * * * *", "UTC", at) == at
    assert latest_tick("*/15 * * * *", "UTC", at.replace(minute=29)) == at


def test_six_fields_means_seconds_last() -> None:
    start = datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC)
    assert [t.second for t in next_fire_times("* * * * * */20", "UTC", start, 3)] == [20, 40, 0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"name": "a", "cron": "nope", "task": {"name": "noop"}}, "not a valid cron"),
        ({"name": "a", "cron": "* * *", "task": {"name": "noop"}}, "not a valid cron"),
        ({"name": "a", "cron": "* * * * *", "timezone": "Mars/Base", "task": {"name": "noop"}}, "IANA"),
        ({"name": "a", "cron": "* * * * *", "task": {"name": "missing"}}, "unknown task name"),
        ({"name": "a", "cron": "* * * * *", "task": {"name": "noop", "run_at": "x"}}, "task: unknown field(s) run_at"),
        ({"name": "a", "cron": "* * * * *", "task": {"name": "noop"}, "catch_up": "all"}, "catch_up"),
        ({"cron": "* * * * *", "task": {"name": "noop"}}, "missing field(s) name"),
        ({"name": "a", "cron": "* * * * *", "task": {"name": "noop"}, "every": 1}, "unknown field(s) every"),
    ],
)
def test_invalid_schedules_are_refused_with_a_named_field(body: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_schedule(body, SET, REG)
    assert needle in err.value.message


def test_patch_keeps_absent_fields() -> None:
    spec = parse_schedule({"name": "n", "cron": "0 * * * *", "task": {"name": "noop", "payload": {"a": 1}}}, SET, REG)
    patched = parse_schedule({"enabled": False}, SET, REG, current=spec)
    assert (patched.cron, patched.payload, patched.enabled) == ("0 * * * *", {"a": 1}, False)


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *"])
def test_a_cron_that_never_fires_is_refused(cron: str) -> None:
    with pytest.raises(ValidationError, match="never fires") as err:
        parse_schedule({"name": "a", "cron": cron, "task": {"name": "noop"}}, SET, REG)
    assert err.value.details == {"field": "cron"}


def test_an_every_second_cron_is_accepted_on_purpose() -> None:
    assert parse_schedule({"name": "a", "cron": "* * * * * *", "task": {"name": "noop"}}, SET, REG).cron


def test_an_oversized_cron_is_refused_without_being_echoed() -> None:
    with pytest.raises(ValidationError) as err:
        parse_schedule({"name": "a", "cron": "9" * 10_000, "task": {"name": "noop"}}, SET, REG)
    assert len(err.value.message) < 200 and err.value.details == {"field": "cron"}
