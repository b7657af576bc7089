"""Connections leave no session state behind (RDS Proxy could multiplex every one of
them; infra/deploy.md, "RDS Proxy"): after submit, drain, sweep, the stats snapshot,
a metrics fold and a health check on one pooled connection, that connection has no
prepared statement, no LISTEN, no advisory lock, no temporary table and every setting
at its default."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.container import Container
from chalicelib.services.health import health
from chalicelib.services.stats import tenant_stats
from chalicelib.services.submit import submit_many
from chalicelib.services.sweep import sweep
from tests.helpers import drain_once, request, status_counts

TENANT = "proxy"

SESSION_STATE = """
SELECT (SELECT count(*) FROM pg_prepared_statements) AS prepared,
       (SELECT count(*) FROM pg_listening_channels()) AS listening,
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory,
       (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_tables,
       (SELECT count(*) FROM pg_cursors) AS cursors,
       (SELECT array_agg(name ORDER BY name) FROM pg_settings
         WHERE source = 'session' AND name NOT IN ('client_encoding', 'DateStyle', 'TimeZone',
                                                   'application_name', 'extra_float_digits')) AS changed,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('transaction_isolation') AS isolation,
       current_setting('transaction_read_only') AS read_only
"""

# As a fresh connection has it.
CLEAN = {
    "listening": 0,
    "advisory": 0,
    "temp_tables": 0,
    "cursors": 0,
    "changed": None,
    "synchronous_commit": "on",
    "isolation": "read committed",
    "read_only": "off",
}


def _work_then_state(rt: Container) -> dict[str, Any]:
    submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(12)] + [request("fail", {"times": 1})])
    for _ in range(2):
        drain_once(rt, seconds=2.0)
        sweep(rt)  # promotes the retry, folds the metrics (an advisory xact lock)
    assert status_counts(rt.settings.database_url) == {"COMPLETED": 13}
    tenant_stats(rt, TENANT)  # the REPEATABLE READ, READ ONLY snapshot
    health(rt)
    with rt.store.connection() as conn:  # the pool's one connection: the one that did all of it
        row = conn.execute(SESSION_STATE).fetchone()
    assert row is not None
    return dict(row)


def test_pooled_connection_carries_no_session_state_without_prepared_statements(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt(db_prepared_statements=False, pool_max_size=1)
    assert _work_then_state(rt) == {"prepared": 0, **CLEAN}


def test_prepared_statements_are_on_by_default_and_the_setting_turns_them_off(
    make_rt: Callable[..., Container],
) -> None:
    def prepared_after_six_health_checks(rt: Container) -> int:
        for _ in range(6):
            rt.store.schema_version()  # one query, run past psycopg's threshold of five
        with rt.store.connection() as conn:
            row = conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
        assert row is not None
        return int(row["n"])

    assert prepared_after_six_health_checks(make_rt(pool_max_size=1)) > 0
    assert prepared_after_six_health_checks(make_rt(pool_max_size=1, db_prepared_statements=False)) == 0
