"""Settings.from_env refuses what would break the processes later, naming the variable."""

from __future__ import annotations

import pytest

from chalicelib.config import ConfigError, Settings

FLOATS = {
    "TASKLANE_LEASE_SECONDS": "lease_seconds",
    "TASKLANE_SWEEP_INTERVAL_SECONDS": "sweep_interval_seconds",
    "TASKLANE_RETRY_BASE_SECONDS": "retry_base_seconds",
    "TASKLANE_DRAIN_IDLE_WAIT_SECONDS": "drain_idle_wait_seconds",
    "TASKLANE_RETENTION_DAYS": "retention_days",
}


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_a_float_setting_must_be_finite(name: str, bad: str) -> None:
    # float() reads these, and NaN slips past every bound check: a lease of NaN seconds
    # would reach Redis and PostgreSQL as a deadline.
    with pytest.raises(ConfigError, match=f"{name} must be a finite number"):
        Settings.from_env({name: bad})


@pytest.mark.parametrize("name", FLOATS)
def test_a_float_setting_still_takes_a_number_and_refuses_words(name: str) -> None:
    assert getattr(Settings.from_env({name: "12.5"}), FLOATS[name]) == 12.5
    with pytest.raises(ConfigError, match=f"{name} must be a number"):
        Settings.from_env({name: "soon"})
