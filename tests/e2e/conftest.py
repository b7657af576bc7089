from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.stack import ROOT, Stack, start_stack
from tools.devstack import services as devservices

E2E_REDIS_DB = 14
FUZZ_REDIS_DB = 9


def _stack(pg_server: str, redis_server: str, db: int) -> Iterator[Stack]:
    redis_url = redis_server.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(redis_url).flushdb()
    s = start_stack(pg_server, redis_url, ROOT / "test-artifacts")
    try:
        yield s
    finally:
        s.stop()
        devservices.drop_database(pg_server, s.database_url.rsplit("/", 1)[-1])


@pytest.fixture(scope="session")
def stack(pg_server: str, redis_server: str) -> Iterator[Stack]:
    """One live local stack for the e2e layer: fresh database, its own Redis db."""
    yield from _stack(pg_server, redis_server, E2E_REDIS_DB)


@pytest.fixture(scope="module")
def fuzz_stack(pg_server: str, redis_server: str) -> Iterator[Stack]:
    """A stack of its own for the fuzzer, whose random tasks (long sleeps among them)
    must not slow down the other e2e tests."""
    yield from _stack(pg_server, redis_server, FUZZ_REDIS_DB)


@pytest.fixture
def artifacts() -> Path:
    path = ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def _no_schedule_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """The stacks live for many tests: a schedule one test leaves enabled (an
    every-second cron above all) would keep creating tasks during the others."""
    yield
    import psycopg

    for name in ("stack", "fuzz_stack"):
        if name in request.fixturenames:
            s: Stack = request.getfixturevalue(name)
            with psycopg.connect(s.database_url, autocommit=True) as conn:
                conn.execute("DELETE FROM schedules")
