"""The bench's own data: a fresh PostgreSQL database per run (dropped at the end)
on the usual server, and a private Redis server the bench starts on a free port
and stops at the end (``tools.devstack.services.start_private_redis``).  The bench
FLUSHDBs its Redis db, so it never runs against a Redis it did not start: a
developer's or another suite's data on 6379 can never be lost to it.  Also starts
and stops the subprocesses the bench launches, always by their own pid / process
group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psycopg
import redis

from bench import stats
from chalicelib.adapters.postgres.migrate import migrate
from tools.devstack import services as devservices

ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = ROOT / ".tasklane"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_REDIS_DB = 8
BENCH_CLIENT_NAME = "tasklane-bench"
BENCH_REDIS_PREFIX = "tasklane-bench"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""


def redis_db_url(server_url: str, db: int) -> str:
    base = server_url.rsplit("/", 1)[0] if server_url.count("/") > 2 else server_url
    return f"{base}/{db}"


@dataclass
class Proc:
    """A subprocess the bench started (its own session, so its group is its pid)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        return [self.pid, *stats.descendants(self.pid)]

    def cpu_seconds(self) -> float:
        """CPU of the process and every live descendant (dramatiq forks its workers)."""
        return sum(c for c in (stats.proc_cpu_seconds(p) for p in self.pids()) if c == c)

    def hwm_mb(self) -> float:
        """The largest peak RSS among the process and its descendants."""
        vals = [stats.proc_hwm_mb(p) for p in self.pids()]
        vals = [v for v in vals if v == v]
        return max(vals) if vals else float("nan")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


@dataclass
class BenchEnv:
    pg_server_url: str
    redis_server_url: str
    database_url: str
    redis_url: str
    dbname: str
    logs: Path
    extra_dbs: list[str] = field(default_factory=list)
    # Where subprocesses import chalicelib from: another checkout gives an A/B run of
    # two versions against the same servers (``BENCH_CODE_ROOT``).
    code_root: Path = ROOT
    _redis: redis.Redis | None = None
    procs: list[Proc] = field(default_factory=list)
    _handles: list[object] = field(default_factory=list)

    # --- processes ------------------------------------------------------------------

    def child_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLANE_")}
        env.update(
            {
                "TASKLANE_DATABASE_URL": self.database_url,
                "TASKLANE_REDIS_URL": self.redis_url,
                "TASKLANE_LOG_LEVEL": "WARNING",
                # A key prefix of its own too: should another process use db 8 with
                # Tasklane's default prefix, its drainers cannot take the bench's ids.
                "TASKLANE_REDIS_PREFIX": BENCH_REDIS_PREFIX,
                "POWERTOOLS_TRACE_DISABLED": "true",
                "PYTHONPATH": str(self.code_root),
            }
        )
        env.update(extra)
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv, cwd=self.code_root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def python(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.spawn(name, [sys.executable, *args], env or self.child_env())

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()
        self.procs = [p for p in self.procs if p.alive()]

    # --- data -----------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        """The bench's own client (named, so other clients of db 8 can be told apart)."""
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url, client_name=BENCH_CLIENT_NAME)
        return self._redis

    @property
    def named_redis_url(self) -> str:
        """The bench db's URL with the bench's client name (for in-process clients)."""
        return f"{self.redis_url}?client_name={BENCH_CLIENT_NAME}"

    def flush_redis(self) -> None:
        r = self.redis()
        assert r.connection_pool.connection_kwargs.get("db") == BENCH_REDIS_DB
        r.flushdb()

    def foreign_redis_clients(self) -> int:
        """Clients of db 8 that are not the bench's (checked between workloads, when no
        bench subprocess runs): another suite using db 8 would corrupt the numbers."""
        if any(p.alive() for p in self.procs):
            return 0
        return sum(
            1
            for c in self.redis().client_list()
            if str(c.get("db")) == str(BENCH_REDIS_DB) and c.get("name") != BENCH_CLIENT_NAME
        )

    def connect(self, url: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(url or self.database_url, autocommit=True)

    def truncate(self) -> None:
        with self.connect() as conn:
            conn.execute("TRUNCATE tasks, task_events CASCADE")

    def new_database(self, suffix: str, *, migrated: bool = True) -> str:
        name = f"{self.dbname}_{suffix}"
        url = devservices.ensure_database(self.pg_server_url, name)
        self.extra_dbs.append(name)
        if migrated:
            migrate(url)
        return url

    def server_cpu(self, dsn: str | None = None) -> dict[str, Any]:
        """CPU so far of the PostgreSQL backends serving ``dsn``'s database (default:
        the bench database) and of the bench's private Redis server."""
        with self.connect(dsn) as conn:
            pids = [
                cast(int, r[0])  # pg_stat_activity.pid: integer
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            ]
        redis_pid = int(self.redis().info("server")["process_id"])
        return {
            "dsn": dsn,
            "pg": {pid: stats.proc_cpu_seconds(pid) for pid in pids},
            "redis": stats.proc_cpu_seconds(redis_pid),
        }

    def server_cpu_delta(self, before: dict[str, Any]) -> dict[str, float]:
        """PostgreSQL and Redis CPU seconds since ``before`` (backends that ended in
        between are missed; the bench keeps its connections open)."""
        after = self.server_cpu(before["dsn"])
        pg = 0.0
        for pid, cpu in after["pg"].items():
            if cpu == cpu:
                base = before["pg"].get(pid, 0.0)
                pg += cpu - (base if base == base else 0.0)
        return {"pg": pg, "redis": after["redis"] - before["redis"]}

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(Exception):
            devservices.drop_database(self.pg_server_url, name)
        if name in self.extra_dbs:
            self.extra_dbs.remove(name)


@contextlib.contextmanager
def bench_env(logs: Path | None = None) -> Iterator[BenchEnv]:
    """Set up a fresh database and a private Redis; tear everything down at the end."""
    pg = devservices.ensure_postgres(STATE_DIR)
    os.environ[devservices.ENV_DIE_WITH_PARENT] = "1"  # a killed bench leaves no server behind
    rd = devservices.start_private_redis(STATE_DIR / f"bench-redis-{uuid.uuid4().hex[:8]}")
    assert rd.started, "the bench's Redis must be one it started (it is flushed)"
    for url in (pg.url, rd.url):
        if _host_of(url) not in LOCAL_HOSTS:
            raise SystemExit(f"the bench only loads servers on 127.0.0.1, not {url}")
    dbname = devservices.test_database_name("bench")
    db_url = devservices.ensure_database(pg.url, dbname)
    env = BenchEnv(
        pg_server_url=pg.url,
        redis_server_url=rd.url,
        database_url=db_url,
        redis_url=redis_db_url(rd.url, BENCH_REDIS_DB),
        dbname=dbname,
        logs=logs or (RESULTS_DIR / "logs"),
        _handles=[pg, rd],
    )
    try:
        migrate(db_url)
        deadline = time.monotonic() + 90
        while env.foreign_redis_clients() and time.monotonic() < deadline:
            time.sleep(1)  # another suite is on db 8 right now: give it a moment to finish
        env.flush_redis()
        yield env
    finally:
        env.stop_all()
        with contextlib.suppress(Exception):
            env.flush_redis()
        for name in list(env.extra_dbs):
            env.drop_database(name)
        # Other sessions' connections are ours only (our subprocesses are stopped).
        for _ in range(3):
            try:
                devservices.drop_database(pg.url, dbname)
                break
            except Exception:
                time.sleep(1)
        rd.stop()
        if rd.data_dir is not None:
            shutil.rmtree(rd.data_dir, ignore_errors=True)
        pg.stop()  # no-op for the shared server; stops only what ensure_postgres started
