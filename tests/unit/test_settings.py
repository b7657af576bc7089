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
    "TASKLANE_DB_TCP_TIMEOUT_SECONDS": "db_tcp_timeout_seconds",
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


def test_the_database_tcp_timeout_is_at_least_a_second_and_becomes_libpq_options() -> None:
    from chalicelib.adapters.postgres.sessions import TCP_TIMEOUT_SECONDS, connection_options

    assert Settings.from_env({}).db_tcp_timeout_seconds == 20.0
    # The store's own default (a Store made without settings: tools, tests) is the same.
    assert Settings().db_tcp_timeout_seconds == TCP_TIMEOUT_SECONDS == 20.0
    with pytest.raises(ConfigError, match=r"TASKLANE_DB_TCP_TIMEOUT_SECONDS must be >= 1\.0"):
        Settings.from_env({"TASKLANE_DB_TCP_TIMEOUT_SECONDS": "0.5"})
    # Unanswered keepalives give up after about idle + 3 intervals; sent data after the
    # user timeout (ms): both near the setting.
    options = connection_options(tcp_timeout_seconds=20.0)
    assert (options["keepalives_idle"], options["keepalives_interval"], options["keepalives_count"]) == (10, 3, 3)
    assert options["tcp_user_timeout"] == 20_000 and options["keepalives"] == 1
    short = connection_options(tcp_timeout_seconds=1.0)
    assert short["keepalives_idle"] == 1 and short["keepalives_interval"] == 1 and short["tcp_user_timeout"] == 1000
