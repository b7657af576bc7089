"""The one rate parser (``config.parse_rate``, events per second) and its two users."""

from __future__ import annotations

import argparse

import pytest

from chalicelib.config import ConfigError, parse_rate, parse_task_limits
from tools.cli.main import rate_limit_per_minute


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("10/s", 10.0), ("600/min", 10.0), ("36/h", 0.01), ("2 / second", 2.0), ("5", 5.0), ("1.5/sec", 1.5)],
)
def test_parse_rate_gives_events_per_second(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


def test_a_bare_number_counts_in_the_unit_the_caller_names() -> None:
    assert parse_rate("120", bare_unit="min") == pytest.approx(2.0)
    assert parse_rate("120/s", bare_unit="min") == pytest.approx(120.0)


@pytest.mark.parametrize("text", ["", "x/s", "10/fortnight", "0/s", "-1/min"])
def test_parse_rate_rejects_nonsense_with_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_rate(text)


def test_task_limits_store_rates_per_second() -> None:
    assert parse_task_limits('{"send-email": {"rate": "600/min"}}')["send-email"].rate_per_second == 10.0


@pytest.mark.parametrize(("text", "per_minute"), [("600/min", 600), ("10/s", 600), ("3600/hour", 60), ("7", 7)])
def test_cli_rate_limit_is_whole_requests_per_minute(text: str, per_minute: int) -> None:
    assert rate_limit_per_minute(text) == per_minute


@pytest.mark.parametrize("text", ["0.5/min", "1/h", "lots"])
def test_cli_rate_limit_below_one_a_minute_or_malformed_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        rate_limit_per_minute(text)


@pytest.mark.parametrize("text", ["nan/s", "NaN", "inf/min", "-inf", "1e400/h"])
def test_a_rate_that_is_no_finite_number_is_refused_where_every_rate_is_parsed(text: str) -> None:
    """NaN passed ``<= 0`` and reached a task type's token bucket (and the CLI's int())."""
    with pytest.raises(ConfigError, match="finite"):
        parse_rate(text)
