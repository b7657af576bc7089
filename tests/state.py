"""What the tests share besides fixtures: settings with short leases, the Redis db URL of
an index, and emptying the test tables and a Redis db between tests.  A plain module, so
test modules import these from here, not from ``conftest`` (which pytest loads itself)."""

from __future__ import annotations

import psycopg
import redis
from psycopg import sql

from chalicelib.config import Settings


def redis_db_url(server_url: str, db: int) -> str:
    base = server_url.rsplit("/", 1)[0] if server_url.count("/") > 2 else server_url
    return f"{base}/{db}"


def fast_settings(database_url: str, redis_url: str, **overrides: object) -> Settings:
    """Settings with short leases and backoffs so failure paths run in seconds."""
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "lease_seconds": 2.0,
        "sweep_interval_seconds": 0.5,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.5,
        "drain_margin_seconds": 0.0,
        "drain_idle_wait_seconds": 0.1,
        "drain_idle_exit_seconds": 0.3,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# Every table a test may write (task_deps and schedule_runs go with tasks and schedules:
# their foreign keys cascade).
TEST_TABLES = (
    "tasks",
    "tasks_archive",
    "task_events",
    "api_keys",
    "schedules",
    "schedule_runs",
    "audit_log",
    "paused_task_types",
    "batches",
    "task_unique_keys",
    "tenant_limits",
    "tenant_settings",
    "workflows",
    "task_outbox",
    "retention_cursors",
    "task_metric_deltas",
    "task_metric_totals",
)
_APPEND_ONLY = "audit_log"  # its trigger refuses DELETE


def _empty_tables_sql() -> sql.Composed:
    tables = [sql.Identifier(t) for t in TEST_TABLES]
    deletes = [sql.SQL("DELETE FROM {}").format(t) for t in tables if t != sql.Identifier(_APPEND_ONLY)]
    return sql.SQL("; ").join(
        [sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(tables)), *deletes]
    )


def empty_tables(database_url: str) -> None:
    """Empty every test table.

    DELETE rather than TRUNCATE: TRUNCATE gives every table and index a new file,
    about a second for these seventeen tables on a busy machine (0.4-1.1 s a test,
    measured), while deleting the rows one test leaves takes milliseconds.  The lock
    first keeps what TRUNCATE's own lock gave: it waits for any transaction still
    touching a table, so nothing a previous test left running writes after the
    clean.  audit_log is append-only (its trigger refuses DELETE), so it alone is
    truncated, and only when a test wrote to it."""
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        conn.execute(_empty_tables_sql())
        audit = sql.Identifier(_APPEND_ONLY)
        if conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(audit)).fetchone() == (True,):
            conn.execute(sql.SQL("TRUNCATE {}").format(audit))


def clean(database_url: str, redis_url: str) -> None:
    empty_tables(database_url)
    redis.Redis.from_url(redis_url).flushdb()
