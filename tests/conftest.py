"""Shared fixtures.

- Unit tests use none of these.
- Integration tests get a fresh PostgreSQL database per run (created here,
  dropped at the end) and a Redis db index of their own, flushed before each test.
  Tables are emptied before each test, and schedules again after it (``rt``,
  ``make_rt``), so no cron schedule outlives the test that made it.
- PostgreSQL: ``TASKLANE_DATABASE_URL`` when set, else the usual local port, else a
  private instance under ``.tasklane/test/`` (see tools.devstack.services).  The suite only
  creates and drops databases named ``tasklane_test_*``/``tasklane_e2e_*``/
  ``tasklane_fault_*``; stale ones left by an interrupted run are dropped at start.
- Redis: always a private server of this run's own, on a free port, stopped at the
  end.  The suite flushes Redis dbs, so it never runs against a Redis it did not
  start (``TASKLANE_REDIS_URL`` is ignored here): two runs on one machine, or a user's
  own Redis, can never lose data to it.
- Redis Cluster: ``redis_cluster`` starts a private 3-master cluster (free ports,
  ``redis-server --cluster-enabled yes`` + ``redis-cli --cluster create``) the first
  time a test asks for it, and stops it at the end; tests that kill one of its masters
  start a cluster of their own with ``start_private_cluster``.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from chalicelib.container import Container
from tests.databases import drop_templates, migrated_database, templates_on
from tests.state import clean, empty_tables, fast_settings, redis_db_url
from tools.devstack import services as devservices
from tools.devstack.orphans import sigterm_as_interrupt
from tools.devstack.services.redis_cluster import RedisClusterHandle, start_private_cluster

ROOT = Path(__file__).resolve().parents[1]
# Where a private PostgreSQL lives: not `make run`'s (.tasklane), whose server a test
# session would stop under it at its end, or it under the tests; make test gives the
# fuzzer's session a server of its own (TASKLANE_TEST_STATE_DIR=.tasklane/fuzz, with
# TASKLANE_PRIVATE_SERVICES=1).
STATE_DIR = ROOT / os.environ.get("TASKLANE_TEST_STATE_DIR", ".tasklane/test")
INTEGRATION_REDIS_DB = 15


@contextmanager
def _pg_users() -> Iterator[Path]:
    """The directory of the sessions using a private PostgreSQL, under an exclusive lock."""
    users = STATE_DIR / "pg-users"
    users.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / ".pg-users.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield users


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The session's PostgreSQL server.

    A private one (no server on 5432) is shared by every pytest session on this
    checkout: each xdist worker, and the fuzzer's session that ``make test`` runs
    alongside.  Each registers its pid; the last one to finish stops the server if a
    test session started it, so no session stops it under another one that is
    still running (a `make run` server is never stopped)."""
    with _pg_users() as users:
        handle = devservices.ensure_postgres(STATE_DIR)
        if handle.private:
            (users / str(os.getpid())).touch()
            if handle.started:
                (users / "started-by-tests").touch()
    devservices.drop_stale_test_databases(handle.url)
    templates_on(handle.url)
    try:
        yield handle.url
    finally:
        drop_templates()
        if handle.private:
            with _pg_users() as users:
                (users / str(os.getpid())).unlink(missing_ok=True)
                others = [p for p in users.iterdir() if p.name.isdigit()]
                for stale in [p for p in others if not _alive(int(p.name))]:
                    stale.unlink(missing_ok=True)
                    others.remove(stale)
                marker = users / "started-by-tests"
                if not others and marker.exists():
                    handle.started = True  # a test session started it: the last one out stops it
                    handle.stop()
                    marker.unlink()
                    # Kept outside the checkout (as root, when the postgres user cannot
                    # reach it: under /tmp/tasklane-pg), its cluster would outlive a
                    # throwaway clone, as CI's is: deleted with the server.
                    devservices.stop_private_services(STATE_DIR, purge=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis for this run: the suite flushes dbs, so never a shared server."""
    handle = devservices.start_private_redis(tmp_path_factory.mktemp("redis"))
    assert handle.started, "the suite's Redis must be one it started"
    yield handle.url
    handle.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterHandle]:
    """A private 3-master Redis Cluster for this run (flushed by the tests that use it)."""
    handle = start_private_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh, migrated database for this test run."""
    name = devservices.test_database_name("test")
    yield migrated_database(pg_server, name)
    devservices.drop_database(pg_server, name)


@pytest.fixture(scope="session")
def redis_url(redis_server: str) -> str:
    return redis_db_url(redis_server, INTEGRATION_REDIS_DB)


def _drop_schedules(database_url: str) -> None:
    """A test's schedules end with it: an every-second cron left enabled would fire
    in every later test's sweeps and change the counts those tests assert."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schedules")  # schedule_runs go with them (ON DELETE CASCADE)


@pytest.fixture
def rt(database_url: str, redis_url: str) -> Iterator[Container]:
    """A runtime on clean tables and an empty Redis db."""
    clean(database_url, redis_url)
    runtime = Container.build(fast_settings(database_url, redis_url))
    try:
        yield runtime
    finally:
        runtime.close()
        _drop_schedules(database_url)


def _runtimes(database_url: str, redis_url: str, **fixed: object) -> Iterator[object]:
    """A factory of runtimes with other settings; closes them all and drops the
    schedules at the end (the caller cleans first)."""
    made: list[Container] = []

    def factory(**overrides: object) -> Container:
        runtime = Container.build(fast_settings(database_url, redis_url, **fixed, **overrides))
        made.append(runtime)
        return runtime

    try:
        yield factory
    finally:
        for runtime in made:
            runtime.close()
        _drop_schedules(database_url)


@pytest.fixture
def make_rt(database_url: str, redis_url: str) -> Iterator[object]:
    """Factory for runtimes with other settings (cleans once, closes all at the end)."""
    clean(database_url, redis_url)
    yield from _runtimes(database_url, redis_url)


@pytest.fixture
def make_cluster_rt(database_url: str, redis_cluster: RedisClusterHandle) -> Iterator[object]:
    """``make_rt`` on the Redis Cluster (``TASKLANE_REDIS_CLUSTER``): every master is
    flushed first."""
    empty_tables(database_url)
    redis_cluster.flush_all()
    yield from _runtimes(database_url, redis_cluster.url, redis_cluster=True)


# The longest modules, handed to the xdist workers first (``--dist loadfile`` deals
# modules out in collection order): collected in folder order, test_packaging (1.5
# minutes of packaging on a slow machine) came near the end and one worker ran it
# alone while the other sat idle.  Longest first as the whole suite measured them
# (-n 2, module totals of --durations=0): packaging 68 s, the cluster losses 41 s, the
# state machine 27 s (Hypothesis: 9-29 s), the CLI 25 s, the PostgreSQL outage 23 s;
# the next ones are 17-18 s.
LONGEST_FIRST = (
    "tests/integration/test_packaging.py",
    "tests/fault/test_redis_cluster_loss.py",
    "tests/integration/test_state_machine.py",
    "tests/e2e/test_ops_cli.py",
    "tests/fault/test_postgres_outage.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Layers by folder, so `-m unit` etc. select them.
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        if layer in {"unit", "integration", "e2e", "fault"}:
            item.add_marker(getattr(pytest.mark, layer))
    root = Path(str(config.rootpath))

    def rank(item: pytest.Item) -> int:
        path = Path(str(item.fspath))
        relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else ""
        return LONGEST_FIRST.index(relative) if relative in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
# The suite starts Python processes by the hundred (five a stack, one a CLI call, the
# fault layer's workers), each importing most of the app.  With PYTHONDONTWRITEBYTECODE
# set (as in some sandboxes and CI images) none of them ever wrote bytecode, so each
# compiled every module it imported again: a drainer took 1.4 CPU-s to start instead of
# 0.5, a stack came up in 6 s instead of 3.  They write it under .tasklane/pycache
# instead, never beside the sources (the packaging test's cold-import probe drops every
# PYTHON variable, so it still starts from none).
if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = str(ROOT / ".tasklane" / "pycache")
# Every Redis server this run starts dies with it, even when the run is killed
# outright (tools/devstack/services/redis_server.py: ENV_DIE_WITH_PARENT).
os.environ[devservices.ENV_DIE_WITH_PARENT] = "1"

# SIGTERM ends a session as Ctrl-C does, its fixtures torn down (stacks, servers,
# databases), and a second one (make's to its process group, then the recipe's trap)
# does not break that off.  make test sends it to the fuzzer's session, whose SIGINT a
# background job ignores.
if threading.current_thread() is threading.main_thread():
    sigterm_as_interrupt()
