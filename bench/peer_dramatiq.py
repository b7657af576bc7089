"""Dramatiq (Redis broker, 2 worker processes x 8 threads) on the same workloads."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench import stats
from bench.common import BenchError, blocked_clients, paced, rate, self_cpu, wait_for
from bench.env import BENCH_REDIS_DB, BenchEnv, Proc

THREADS = 8


def _app(env: BenchEnv) -> Any:
    os.environ["BENCH_REDIS_URL"] = env.named_redis_url
    from bench import peer_dramatiq_app

    if peer_dramatiq_app.REDIS_URL != env.named_redis_url:
        raise BenchError("bench.peer_dramatiq_app was imported with another Redis URL")
    return peer_dramatiq_app


def _start(env: BenchEnv, processes: int, *, wait_go: bool) -> Proc:
    child_env = env.child_env(BENCH_REDIS_URL=env.redis_url, BENCH_WAIT_GO="1" if wait_go else "0")
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "bench.peer_dramatiq_app",
        "--processes",
        str(processes),
        "--threads",
        str(THREADS),
        "--queues",
        "bench",
    ]
    proc = env.spawn("dramatiq", argv, child_env)
    if wait_go:

        def ready() -> bool:
            if not proc.alive():
                raise BenchError(f"dramatiq exited early:\n{proc.log_tail()}")
            return blocked_clients(env.redis(), BENCH_REDIS_DB, ("blpop",)) >= processes

        wait_for(ready, timeout=90, interval=0.05, what="dramatiq workers")
    else:
        time.sleep(0.5)
        wait_for(lambda: len(stats.descendants(proc.pid)) >= processes, timeout=60, what="dramatiq processes")
        time.sleep(2.0)  # imports and broker connections
    return proc


def _stop(env: BenchEnv, proc: Proc) -> None:
    proc.stop()
    if proc in env.procs:
        env.procs.remove(proc)


def single_submit(env: BenchEnv, *, seconds: float, max_count: int) -> dict[str, Any]:
    env.flush_redis()
    app = _app(env)
    for _ in range(5):
        app.noop.send(1)
    lat = []
    cpu0 = self_cpu()
    start = time.perf_counter()
    for _ in range(max_count):
        t = time.perf_counter()
        app.noop.send(1)
        lat.append(time.perf_counter() - t)
        if t - start > seconds:
            break
    wall = time.perf_counter() - start
    cpu = self_cpu() - cpu0
    return {"rate": rate(len(lat), wall), "cpu_ms_per_submit": cpu / len(lat) * 1000, **stats.latency_summary(lat)}


def drain_run(env: BenchEnv, *, processes: int, n: int, timeout: float = 60) -> dict[str, Any]:
    """N messages enqueued beforehand (one ``send`` each: Dramatiq has no batch enqueue),
    workers released at one instant, time until the last message was processed."""
    env.flush_redis()
    app = _app(env)
    proc = _start(env, processes, wait_go=True)
    r = env.redis()
    try:
        cpu0 = self_cpu()
        for i in range(n):
            app.noop.send(i)
        submit_cpu = self_cpu() - cpu0
        worker_cpu0 = proc.cpu_seconds()
        servers0 = env.server_cpu()
        t_release = time.time()
        r.lpush(app.GO_KEY, *(["go"] * processes))

        def counts() -> tuple[int, float]:
            total, last = 0, 0.0
            for key in r.scan_iter(app.STATS_PREFIX + "*"):
                h = r.hgetall(key)
                total += int(h.get(b"count", 0))
                last = max(last, float(h.get(b"last", 0)))
            return total, last

        _total, last = wait_for(
            lambda: c if (c := counts())[0] >= n else None, timeout=timeout, interval=0.05, what="dramatiq messages"
        )
        worker_cpu = proc.cpu_seconds() - worker_cpu0
        servers = env.server_cpu_delta(servers0)
        rss = proc.hwm_mb()
    finally:
        _stop(env, proc)
    seconds = last - t_release
    return {
        "processes": processes,
        "n": n,
        "rate": rate(n, seconds),
        "seconds": seconds,
        "cpu_s_per_1000": (submit_cpu + worker_cpu) / n * 1000,
        "submit_cpu_s_per_1000": submit_cpu / n * 1000,
        "worker_cpu_s_per_1000": worker_cpu / n * 1000,
        "worker_rss_mb": rss,
        "redis_cpu_s_per_1000": servers["redis"] / n * 1000,
        "ceiling_2_cores": 2.0 / ((worker_cpu + servers["redis"]) / n),
    }


def bulk_submit(env: BenchEnv, *, n: int) -> dict[str, Any]:
    """Dramatiq has no batch enqueue (``group`` sends one by one): N sends."""
    env.flush_redis()
    app = _app(env)
    start = time.perf_counter()
    for i in range(n):
        app.noop.send(i)
    return {"rate": rate(n, time.perf_counter() - start)}


def latency_run(env: BenchEnv, *, per_second: float, count: int) -> dict[str, Any]:
    env.flush_redis()
    app = _app(env)
    proc = _start(env, 1, wait_go=False)
    r = env.redis()
    try:
        app.stamp.send(time.time())
        wait_for(lambda: r.llen(app.LATENCY_KEY) >= 1, timeout=30, what="dramatiq warm-up")
        r.delete(app.LATENCY_KEY)
        sent, seconds = paced(per_second, count, count / per_second * 1.5 + 5, lambda i: app.stamp.send(time.time()))
        wait_for(lambda: r.llen(app.LATENCY_KEY) >= sent, timeout=60, interval=0.05, what="dramatiq latency")
        lat = [float(x) for x in r.lrange(app.LATENCY_KEY, 0, -1)]
    finally:
        _stop(env, proc)
    return {"achieved_rate": rate(sent, seconds), **stats.latency_summary(lat)}
