from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chalicelib import devservices
from tests.stack import ROOT, Stack, start_stack

E2E_REDIS_DB = 14


@pytest.fixture(scope="session")
def stack(pg_server: str, redis_server: str) -> Iterator[Stack]:
    """One live local stack for the e2e layer: fresh database, its own Redis db."""
    redis_url = redis_server.rsplit("/", 1)[0] + f"/{E2E_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    s = start_stack(pg_server, redis_url, ROOT / "test-artifacts")
    yield s
    s.stop()
    dbname = s.database_url.rsplit("/", 1)[-1]
    devservices.drop_database(pg_server, dbname)


@pytest.fixture
def artifacts() -> Path:
    path = ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
