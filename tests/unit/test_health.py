"""Health without I/O: the sweeper's freshness, the stale window setting, and the
``/health`` body and status the API builds from a report."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.api import presenters
from chalicelib.config import ConfigError, Settings
from chalicelib.services.health import Condition, HealthReport, Probe, SweeperHealth, sweeper_health


def test_sweeper_is_up_while_fresh_and_down_when_stale() -> None:
    now = 1_700_000_000.0
    assert sweeper_health(now - 10, 180, now).condition is Condition.UP
    stale = sweeper_health(now - 200, 180, now)
    assert stale.condition is Condition.DOWN and stale.message is not None and "200 s" in stale.message


def test_a_missing_sweep_is_unknown_for_one_window_then_down() -> None:
    now = 1_700_000_000.0
    sweeper_health(now, 180, now)  # resets the "first noticed" clock
    assert sweeper_health(None, 180, now).condition is Condition.UNKNOWN
    assert sweeper_health(None, 180, now + 100).condition is Condition.UNKNOWN
    assert sweeper_health(None, 180, now + 181).condition is Condition.DOWN
    assert sweeper_health(now + 182, 180, now + 182).condition is Condition.UP


def test_stale_window_defaults_to_three_aws_minutes_and_can_be_set() -> None:
    assert Settings.from_env({}).sweeper_stale_after == 180
    assert Settings.from_env({"TASKLANE_SWEEP_INTERVAL_SECONDS": "120"}).sweeper_stale_after == 360
    assert Settings(sweep_interval_seconds=120).sweeper_stale_after == 360
    custom = Settings.from_env({"TASKLANE_SWEEP_STALE_SECONDS": "15", "TASKLANE_METRICS_TOKEN": "t"})
    assert custom.sweeper_stale_after == 15 and custom.metrics_token == "t"
    assert Settings.from_env({"TASKLANE_METRICS_TOKEN": ""}).metrics_token is None
    for bad in ("soon", "0", "-1", "nan"):
        with pytest.raises(ConfigError, match="TASKLANE_SWEEP_STALE_SECONDS"):
            Settings.from_env({"TASKLANE_SWEEP_STALE_SECONDS": bad})


UP = Probe(Condition.UP, latency_ms=1.5)


def test_health_body_keeps_its_shape_and_is_200_when_up() -> None:
    swept = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    sweeper = SweeperHealth(Condition.UP, stale_after_seconds=180, last_sweep_at=swept, age_seconds=2.0)
    status, body = presenters.health(HealthReport(UP, UP, sweeper, 7))
    assert status == 200
    assert body == {
        "status": "UP",
        "components": {
            "db": {"status": "UP", "latency_ms": 1.5, "migration_version": 7},
            "redis": {"status": "UP", "latency_ms": 1.5},
            "sweeper": {
                "status": "UP",
                "last_sweep_at": swept.isoformat(),
                "age_seconds": 2.0,
                "stale_after_seconds": 180,
            },
        },
        "migration_version": 7,
    }
    assert list(body) == ["status", "components", "migration_version"]


def test_any_component_down_is_503_and_an_unknown_sweeper_alone_is_not() -> None:
    unknown = SweeperHealth(Condition.UNKNOWN, message="Redis is unreachable")
    down = Probe(Condition.DOWN, error="connection refused")
    status, body = presenters.health(HealthReport(UP, down, unknown, 7))
    assert status == 503 and body["status"] == "DOWN"
    assert body["components"]["redis"] == {"status": "DOWN", "error": "connection refused"}
    assert body["components"]["sweeper"] == {"status": "UNKNOWN", "message": "Redis is unreachable"}
    status, body = presenters.health(HealthReport(UP, UP, unknown, 7))
    assert status == 200 and body["status"] == "UP"
    status, body = presenters.health(HealthReport(down, UP, unknown, None))
    assert status == 503 and body["components"]["db"] == {"status": "DOWN", "error": "connection refused"}
    assert body["migration_version"] is None


def test_a_missing_sweep_is_shown_with_its_window() -> None:
    now = 1_700_000_000.0
    sweeper_health(now, 60, now)  # resets the "first noticed" clock
    sweeper_health(None, 60, now)  # first noticed missing
    shown = presenters.sweeper(sweeper_health(None, 60, now + 5))
    assert shown == {
        "status": "UNKNOWN",
        "last_sweep_at": None,
        "stale_after_seconds": 60,
        "message": "no sweep recorded in Redis for 5 s",
    }
