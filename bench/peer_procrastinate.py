"""Procrastinate (PostgreSQL only, 2 worker processes, concurrency 8) on the same
workloads, in a database of its own (dropped at the end of the run)."""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

from bench import stats
from bench.common import BenchError, paced, rate, self_cpu, wait_for
from bench.env import BenchEnv, Proc

_dsn: str | None = None
_dsn_env: int | None = None


def _app(env: BenchEnv) -> Any:
    global _dsn, _dsn_env
    if _dsn is None or _dsn_env != id(env):
        _dsn_env = id(env)
        _dsn = env.new_database("procrastinate", migrated=False)
        os.environ["BENCH_PROCRASTINATE_DSN"] = _dsn
        os.environ["BENCH_REDIS_URL"] = env.redis_url
        from bench import peer_procrastinate_app as m

        with m.app.open():
            m.app.schema_manager.apply_schema()
    from bench import peer_procrastinate_app as m

    if m.DSN != _dsn:
        raise BenchError("bench.peer_procrastinate_app was imported with another DSN")
    return m


def _reset(env: BenchEnv) -> None:
    assert _dsn is not None
    with psycopg.connect(_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers CASCADE")
        conn.execute("DELETE FROM procrastinate_workers")


def _listeners(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
        ).fetchone()
    return int(row[0]) if row else 0


def _start(env: BenchEnv, workers: int) -> list[Proc]:
    assert _dsn is not None
    child_env = env.child_env(BENCH_PROCRASTINATE_DSN=_dsn, BENCH_REDIS_URL=env.redis_url)
    procs = [
        env.python(f"procrastinate{i + 1}", "-m", "bench.peer_procrastinate_app", "worker", env=child_env)
        for i in range(workers)
    ]

    def ready() -> bool:
        for p in procs:
            if not p.alive():
                raise BenchError(f"{p.name} exited early:\n{p.log_tail()}")
        return _listeners(_dsn) >= workers

    wait_for(ready, timeout=90, interval=0.1, what="procrastinate workers")
    time.sleep(0.3)
    return procs


def _stop(env: BenchEnv, procs: list[Proc]) -> None:
    for p in procs:
        p.stop()
        if p in env.procs:
            env.procs.remove(p)


def single_submit(env: BenchEnv, *, seconds: float, max_count: int) -> dict[str, Any]:
    m = _app(env)
    _reset(env)
    with m.app.open():
        for _ in range(5):
            m.noop.defer(n=1)
        lat = []
        cpu0 = self_cpu()
        start = time.perf_counter()
        for _ in range(max_count):
            t = time.perf_counter()
            m.noop.defer(n=1)
            lat.append(time.perf_counter() - t)
            if t - start > seconds:
                break
        wall = time.perf_counter() - start
        cpu = self_cpu() - cpu0
    return {"rate": rate(len(lat), wall), "cpu_ms_per_submit": cpu / len(lat) * 1000, **stats.latency_summary(lat)}


def bulk_submit(env: BenchEnv, *, calls: int, per_call: int = 500) -> dict[str, Any]:
    m = _app(env)
    _reset(env)
    with m.app.open():
        m.noop.batch_defer({"n": 0})
        cpu0 = self_cpu()
        start = time.perf_counter()
        for _ in range(calls):
            m.noop.batch_defer(*({"n": i} for i in range(per_call)))
        wall = time.perf_counter() - start
        cpu = self_cpu() - cpu0
    n = calls * per_call
    return {"rate": rate(n, wall), "cpu_s_per_1000": cpu / n * 1000}


def drain_run(env: BenchEnv, *, workers: int, n: int, timeout: float = 180) -> dict[str, Any]:
    """Idle workers; N jobs deferred in one batch (visible at one commit); time until
    the last job's 'succeeded' event."""
    m = _app(env)
    _reset(env)
    procs = _start(env, workers)
    try:
        with m.app.open():
            jobs = [{"n": i} for i in range(n)]
            cpu_w0 = [p.cpu_seconds() for p in procs]
            servers0 = env.server_cpu(_dsn)
            cpu0 = self_cpu()
            m.noop.batch_defer(*jobs)
            t_release = time.time()
            submit_cpu = self_cpu() - cpu0
        assert _dsn is not None
        with psycopg.connect(_dsn, autocommit=True) as conn:

            def done() -> Any:
                row = conn.execute(
                    "SELECT count(*), extract(epoch FROM max(at)) FROM procrastinate_events WHERE type = 'succeeded'"
                ).fetchone()
                return row if row and row[0] >= n else None

            row = wait_for(done, timeout=timeout, interval=0.1, what="procrastinate jobs")
        worker_cpu = sum(p.cpu_seconds() - c for p, c in zip(procs, cpu_w0, strict=True))
        servers = env.server_cpu_delta(servers0)
        rss = max(p.hwm_mb() for p in procs)
    finally:
        _stop(env, procs)
    seconds = float(row[1]) - t_release
    return {
        "workers": workers,
        "n": n,
        "rate": rate(n, seconds),
        "seconds": seconds,
        "cpu_s_per_1000": (submit_cpu + worker_cpu) / n * 1000,
        "submit_cpu_s_per_1000": submit_cpu / n * 1000,
        "worker_cpu_s_per_1000": worker_cpu / n * 1000,
        "worker_rss_mb": rss,
        "pg_cpu_s_per_1000": servers["pg"] / n * 1000,
        "ceiling_2_cores": 2.0 / ((worker_cpu + servers["pg"]) / n),
    }


def latency_run(env: BenchEnv, *, per_second: float, count: int) -> dict[str, Any]:
    m = _app(env)
    _reset(env)
    env.flush_redis()
    procs = _start(env, 1)
    r = env.redis()
    try:
        with m.app.open():
            m.stamp.defer(t0=time.time())
            wait_for(lambda: r.llen(m.LATENCY_KEY) >= 1, timeout=30, what="procrastinate warm-up")
            r.delete(m.LATENCY_KEY)
            sent, seconds = paced(
                per_second, count, count / per_second * 1.5 + 5, lambda i: m.stamp.defer(t0=time.time())
            )
        wait_for(lambda: r.llen(m.LATENCY_KEY) >= sent, timeout=90, interval=0.05, what="procrastinate latency")
        lat = [float(x) for x in r.lrange(m.LATENCY_KEY, 0, -1)]
    finally:
        _stop(env, procs)
    return {"achieved_rate": rate(sent, seconds), **stats.latency_summary(lat)}
