"""Fixtures of the fault layer: kills, stalls, restarts and outages.

- Tests that leave the servers running use the shared PostgreSQL and Redis of the
  session (``pg_server``/``redis_server``): a fresh database each (dropped at the
  end) and Redis db 10, flushed first, under a key prefix of their own.
- Tests that stop, kill or flush-all a server start a private one
  (``private_redis``/``private_pg``); the machine's shared servers are never
  stopped, flushed or reconfigured.
- Workers are real subprocesses (``workers``), killed in teardown whatever happens.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chalicelib.config import Settings
from chalicelib.container import Container
from tests.databases import migrated_database
from tests.fault.workers import Workers, worker_env
from tests.state import redis_db_url
from tools.devstack import services as devservices

FAULT_REDIS_DB = 10  # 10, 11 and 12 belong to this layer; 13-15 to the others
TENANT = "fault"


@pytest.fixture
def fault_db(pg_server: str) -> Iterator[str]:
    """A fresh, migrated database on the shared server (a copy of the run's template),
    dropped at the end."""
    name = devservices.test_database_name("fault")
    try:
        yield migrated_database(pg_server, name)
    finally:
        devservices.drop_database(pg_server, name)


@pytest.fixture
def fault_redis(redis_server: str) -> str:
    """Redis db 10 of the suite's own private server (never a shared one), flushed: this db only."""
    url = redis_db_url(redis_server, FAULT_REDIS_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def prefix() -> str:
    return f"tlfault-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[devservices.RedisHandle]:
    """A Redis server of this test's own (it may be flushed, killed, restarted)."""
    handle = devservices.start_private_redis(tmp_path / "redis")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[devservices.PostgresHandle]:
    """A PostgreSQL server of this test's own (it may be stopped and restarted)."""
    handle = devservices.start_private_postgres(tmp_path / "pg")
    try:
        yield handle
    finally:
        handle.stop(remove_data=True)


def make_runtime(database_url: str, redis_url: str, prefix: str, **overrides: object) -> Container:
    """An in-process runtime (for submitting, cancelling and inspecting) that shares
    the workers' database, Redis and key prefix."""
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "lease_seconds": 2.0,
        "retry_base_seconds": 0.1,
        "retry_max_seconds": 1.0,
    }
    values.update(overrides)
    return Container.build(Settings(**values))  # type: ignore[arg-type]


def queue_is_empty(rt: Container) -> bool:
    """True when Redis holds no id at all: nothing ready, delayed or leased."""
    return not any(rt.queue.depths().values())


@pytest.fixture
def runtime(fault_db: str, fault_redis: str, prefix: str) -> Iterator[Container]:
    rt = make_runtime(fault_db, fault_redis, prefix)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def workers(fault_db: str, fault_redis: str, prefix: str, tmp_path: Path) -> Iterator[Workers]:
    """Drain/sweep subprocesses on the test's database and Redis db; all killed at the end."""
    w = Workers(worker_env(fault_db, fault_redis, prefix), tmp_path / "workers")
    try:
        yield w
    finally:
        w.close()
