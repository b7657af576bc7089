"""Private PostgreSQL/Redis servers from tools.devstack.services, for real.

Starts servers of its own on free ports under tmp dirs; never touches the
machine's shared servers on 5432/6379 beyond a read-only probe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis

from tools.devstack import services as ds

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ds.ENV_DATABASE_URL, ds.ENV_REDIS_URL, ds.ENV_PRIVATE_SERVICES):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[ds.PostgresHandle]:
    handle = ds.start_private_postgres(tmp_path / "pg")
    yield handle
    handle.stop(remove_data=True)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[ds.RedisHandle]:
    handle = ds.start_private_redis(tmp_path / "redis")
    yield handle
    handle.stop()


def _rows(url: str) -> list[tuple[int]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("SELECT n FROM t ORDER BY n").fetchall()


def test_private_postgres_lifecycle(private_pg: ds.PostgresHandle, tmp_path: Path) -> None:
    pg = private_pg
    assert pg.started and pg.private and pg.port not in (5432, 6379)
    assert pg.url == ds.pg_server_url(pg.port or 0)
    first_pid = pg.pid
    assert first_pid is not None and ds.pid_alive(first_pid)

    # Several processes creating the same database at once must all succeed.
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(ds.ensure_database, pg.url, "race_db") for _ in range(4)]
        results = [future.result() for future in futures]  # re-raises any failure
    db_url = pg.database_url("race_db")
    assert results == [db_url] * 4
    assert ds.ensure_database(pg.url, "race_db") == db_url  # idempotent

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t VALUES (1)")

    pg.restart()
    assert not ds.pid_alive(first_pid)
    assert pg.pid not in (None, first_pid)
    assert _rows(db_url) == [(1,)]

    # A hard crash keeps committed rows (fsync=on); start runs crash recovery.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    crashed_pid = pg.pid
    assert crashed_pid is not None
    pg.kill()
    assert not ds.pid_alive(crashed_pid) and pg.pid is None
    assert not ds.postgres_answers(pg.url)
    pg.start()
    assert _rows(db_url) == [(1,), (2,)]

    # Another start on the same directory reuses the running server.
    again = ds.start_private_postgres(tmp_path / "pg")
    assert (again.url, again.pid) == (pg.url, pg.pid)

    # drop_database disconnects sessions that still hang on.
    holder = psycopg.connect(db_url)
    try:
        ds.drop_database(pg.url, "race_db")
    finally:
        holder.close()
    ds.drop_database(pg.url, "race_db")  # already gone: fine
    assert not ds.postgres_answers(db_url)

    last_pid = pg.pid
    assert last_pid is not None
    data_dir = pg.data_dir
    assert data_dir is not None
    pg.stop(remove_data=True)
    assert not ds.pid_alive(last_pid) and pg.pid is None
    assert not data_dir.exists()
    assert not ds.postgres_answers(pg.url)


def test_private_redis_lifecycle(private_redis: ds.RedisHandle, tmp_path: Path) -> None:
    rd = private_redis
    assert rd.started and rd.private and rd.port not in (5432, 6379)
    client = redis.Redis.from_url(rd.url)
    try:
        assert client.set("k", "v")
        first_pid = rd.pid
        assert first_pid is not None

        rd.restart()  # same URL; no persistence, so the key is gone
        assert not ds.pid_alive(first_pid)
        assert rd.pid not in (None, first_pid)
        assert client.get("k") is None

        again = ds.start_private_redis(tmp_path / "redis")  # reuses the running one
        assert (again.url, again.pid) == (rd.url, rd.pid)

        killed_pid = rd.pid
        assert killed_pid is not None
        rd.kill()
        assert not ds.pid_alive(killed_pid) and rd.pid is None
        assert not ds.redis_answers(rd.url, timeout=0.5)
        rd.start()
        assert client.ping()

        last_pid = rd.pid
        assert last_pid is not None
        rd.stop()
        assert not ds.pid_alive(last_pid) and rd.pid is None
        assert not ds.redis_answers(rd.url, timeout=0.5)
    finally:
        client.close()


def test_ensure_private_reuse_and_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    pg = ds.ensure_postgres(state, force_private=True)
    monkeypatch.setenv(ds.ENV_PRIVATE_SERVICES, "1")  # same switch, via the env
    rd = ds.ensure_redis(state)
    try:
        assert pg.started and rd.started
        assert pg.port not in (5432, 6379) and rd.port not in (5432, 6379)
        assert ds.postgres_answers(pg.url) and ds.redis_answers(rd.url)

        # A second caller (say, another test process) reuses them and does not own them.
        pg2 = ds.ensure_postgres(state, force_private=True)
        rd2 = ds.ensure_redis(state)
        assert (pg2.url, pg2.started) == (pg.url, False)
        assert (rd2.url, rd2.started) == (rd.url, False)
        pg2.stop()
        rd2.stop()
        assert ds.postgres_answers(pg.url) and ds.redis_answers(rd.url)

        # The CLI finds the same servers, prints them, and stops them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLANE_")}
        cli = [sys.executable, "-m", "tools.devstack.services"]
        out = subprocess.run(
            [*cli, "ensure", "--state-dir", str(state), "--force-private"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert out.splitlines() == [
            f"export {ds.ENV_DATABASE_URL}={pg.url}",
            f"export {ds.ENV_REDIS_URL}={rd.url}",
        ]
        pg_pid, rd_pid = pg.pid, rd.pid
        assert pg_pid is not None and rd_pid is not None
        subprocess.run(
            [*cli, "stop", "--state-dir", str(state)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert not ds.pid_alive(pg_pid) and not ds.pid_alive(rd_pid)
        assert not ds.postgres_answers(pg.url) and not ds.redis_answers(rd.url, timeout=0.5)
    finally:
        pg.stop(remove_data=True)
        rd.stop()


@pytest.fixture
def shared_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """The machine's shared servers on 5432/6379 when they answer; otherwise private
    stand-ins this fixture starts and puts in their place (the URLs ``ensure_*``
    probe), so the ownership rules are checked on every machine, never skipped."""
    from tools.devstack.services import postgres as pg_module
    from tools.devstack.services import redis_server as redis_module

    started: list[ds.PostgresHandle | ds.RedisHandle] = []
    pg_url, redis_url = ds.SHARED_PG_URL, ds.SHARED_REDIS_URL
    if not ds.postgres_answers(pg_url):
        pg = ds.start_private_postgres(tmp_path / "stand-in-pg")
        started.append(pg)
        pg_url = pg.url
        monkeypatch.setattr(pg_module, "SHARED_PG_URL", pg_url)
    if not ds.redis_answers(redis_url):
        rd = ds.start_private_redis(tmp_path / "stand-in-redis")
        started.append(rd)
        redis_url = rd.url
        monkeypatch.setattr(redis_module, "SHARED_REDIS_URL", redis_url)
    assert ds.postgres_answers(pg_url) and ds.redis_answers(redis_url), "no PostgreSQL/Redis to share"
    try:
        yield pg_url, redis_url
    finally:
        for handle in started:
            if isinstance(handle, ds.PostgresHandle):
                handle.stop(remove_data=True)
            else:
                handle.stop()


def test_shared_servers_are_used_but_never_owned(tmp_path: Path, shared_servers: tuple[str, str]) -> None:
    pg_url, redis_url = shared_servers
    pg = ds.ensure_postgres(tmp_path / "state")
    rd = ds.ensure_redis(tmp_path / "state")
    assert (pg.url, pg.started) == (pg_url, False)
    assert (rd.url, rd.started) == (redis_url, False)
    pg.stop()
    rd.stop()
    for action in (pg.kill, pg.restart, rd.kill, rd.restart):
        with pytest.raises(RuntimeError, match="did not start"):
            action()
    assert ds.postgres_answers(pg_url) and ds.redis_answers(redis_url)
    assert not (tmp_path / "state").exists()
