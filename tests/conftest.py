"""Shared fixtures.

- Unit tests use none of these.
- Integration tests get a fresh PostgreSQL database per run (created here,
  dropped at the end) and a Redis db index of their own, flushed before each test.
- Servers: ``TASKLANE_DATABASE_URL``/``TASKLANE_REDIS_URL`` when set, else the usual
  local ports, else private instances under ``.tasklane/`` (see devservices).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chalicelib import devservices
from chalicelib.config import Settings
from chalicelib.runtime import Runtime
from chalicelib.store.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = ROOT / ".tasklane"
INTEGRATION_REDIS_DB = 15


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    handle = devservices.ensure_postgres(STATE_DIR)
    yield handle.url
    handle.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    handle = devservices.ensure_redis(STATE_DIR)
    yield handle.url
    handle.stop()


def _redis_db_url(server_url: str, db: int) -> str:
    base = server_url.rsplit("/", 1)[0] if server_url.count("/") > 2 else server_url
    return f"{base}/{db}"


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh, migrated database for this test run."""
    name = f"tasklane_test_{uuid.uuid4().hex[:10]}"
    url = devservices.ensure_database(pg_server, name)
    migrate(url)
    yield url
    devservices.drop_database(pg_server, name)


@pytest.fixture(scope="session")
def redis_url(redis_server: str) -> str:
    return _redis_db_url(redis_server, INTEGRATION_REDIS_DB)


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


def _clean(database_url: str, redis_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, task_events, api_keys")
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def rt(database_url: str, redis_url: str) -> Iterator[Runtime]:
    """A runtime on clean tables and an empty Redis db."""
    _clean(database_url, redis_url)
    runtime = Runtime.build(fast_settings(database_url, redis_url))
    yield runtime
    runtime.close()


@pytest.fixture
def make_rt(database_url: str, redis_url: str) -> Iterator[object]:
    """Factory for runtimes with other settings (cleans once, closes all at the end)."""
    _clean(database_url, redis_url)
    made: list[Runtime] = []

    def factory(**overrides: object) -> Runtime:
        runtime = Runtime.build(fast_settings(database_url, redis_url, **overrides))
        made.append(runtime)
        return runtime

    yield factory
    for runtime in made:
        runtime.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Layers by folder, so `-m unit` etc. select them.
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        if layer in {"unit", "integration", "e2e", "fault"}:
            item.add_marker(getattr(pytest.mark, layer))


os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
