"""The seed's naive design, against the same PostgreSQL table and Redis server, as
the baseline Tasklane's batching is measured against:

- submit: one INSERT (autocommit) and one LPUSH per task;
- worker (2 processes): per task BRPOP, SELECT the row, UPDATE to PROCESSING,
  run the executor, UPDATE to COMPLETED.

No audit rows and no leases in Redis: it does less durable bookkeeping than
Tasklane, so the comparison flatters it.  ``python -m bench.naive worker`` is
the worker process."""

from __future__ import annotations

import json
import math
import signal
import sys
import time
import uuid
from typing import Any, cast

import psycopg
import redis

from bench import stats
from bench.common import BenchError, blocked_clients, paced, rate, self_cpu, wait_for
from bench.env import BENCH_REDIS_DB, BenchEnv, Proc

QUEUE_KEY = "naive:queue"
GO_KEY = "naive:go"

INSERT = """INSERT INTO tasks (id, tenant, name, status, priority, payload, enqueued_at)
            VALUES (%s, %s, %s, 'QUEUED', 'normal', %s::jsonb, now())"""
SELECT = "SELECT id, name, payload, attempts, status FROM tasks WHERE id = %s"
MARK_PROCESSING = """UPDATE tasks SET status = 'PROCESSING', attempts = attempts + 1, lease_token = %s,
                            lease_expires_at = now() + interval '30 seconds', started_at = now(), updated_at = now()
                     WHERE id = %s"""
MARK_COMPLETED = """UPDATE tasks SET status = 'COMPLETED', result = %s::jsonb, finished_at = now(),
                           lease_token = NULL, lease_expires_at = NULL, updated_at = now()
                    WHERE id = %s"""


class NaiveClient:
    def __init__(self, database_url: str, redis_url: str) -> None:
        self.pg = psycopg.connect(database_url, autocommit=True)
        self.r = redis.Redis.from_url(redis_url, client_name="tasklane-bench")

    def submit(self, tenant: str, name: str, payload: dict[str, Any]) -> str:
        task_id = str(uuid.uuid4())
        self.pg.execute(INSERT, (task_id, tenant, name, json.dumps(payload)))
        self.r.lpush(QUEUE_KEY, task_id)
        return task_id

    def close(self) -> None:
        self.pg.close()
        self.r.close()


def worker(database_url: str, redis_url: str) -> int:
    stop = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    pg = psycopg.connect(database_url, autocommit=True)
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 600  # bounded even if nobody says go
    while not stop and r.blpop([GO_KEY], timeout=1) is None:
        if time.monotonic() > deadline:
            return 1
    while not stop:
        popped = r.brpop([QUEUE_KEY], timeout=1)
        if popped is None:
            continue
        task_id = cast(bytes, popped[1]).decode()  # a client without decode_responses
        row = pg.execute(SELECT, (task_id,)).fetchone()
        if row is None or row[4] != "QUEUED":
            continue
        pg.execute(MARK_PROCESSING, (str(uuid.uuid4()), task_id))
        payload = row[2]
        if row[1] == "bench_stamp":
            result: Any = {"t1": time.time(), "t0": payload.get("t0")}
        else:
            result = payload  # noop
        pg.execute(MARK_COMPLETED, (json.dumps(result), task_id))
    return 0


# --- workloads ---------------------------------------------------------------------------


def _start(env: BenchEnv, count: int) -> list[Proc]:
    procs = [
        env.python(f"naive{i + 1}", "-m", "bench.naive", "worker", env.database_url, env.redis_url)
        for i in range(count)
    ]

    def ready() -> bool:
        for p in procs:
            if not p.alive():
                raise BenchError(f"{p.name} exited early:\n{p.log_tail()}")
        return blocked_clients(env.redis(), BENCH_REDIS_DB, ("blpop",)) >= count

    wait_for(ready, timeout=60, interval=0.05, what="naive workers")
    return procs


def single_submit(env: BenchEnv, *, seconds: float, max_count: int) -> dict[str, Any]:
    env.flush_redis()
    c = NaiveClient(env.database_url, env.redis_url)
    tenant = "naive-single-" + uuid.uuid4().hex[:6]
    try:
        for _ in range(5):
            c.submit(tenant, "noop", {"n": 1})
        lat = []
        cpu0 = self_cpu()
        start = time.perf_counter()
        for _ in range(max_count):
            t = time.perf_counter()
            c.submit(tenant, "noop", {"n": 1})
            lat.append(time.perf_counter() - t)
            if t - start > seconds:
                break
        wall = time.perf_counter() - start
        cpu = self_cpu() - cpu0
    finally:
        c.close()
    return {"rate": rate(len(lat), wall), "cpu_ms_per_submit": cpu / len(lat) * 1000, **stats.latency_summary(lat)}


def drain_run(env: BenchEnv, *, workers: int, n: int, submit_cpu_ms: float, timeout: float = 180) -> dict[str, Any]:
    """Pre-fill N tasks (rows + list; setup, not timed), release the workers at once,
    time until every row is COMPLETED."""
    env.flush_redis()
    env.truncate()
    procs = _start(env, workers)
    tenant = "naive-drain-" + uuid.uuid4().hex[:6]
    ids = [str(uuid.uuid4()) for _ in range(n)]
    try:
        with env.connect() as conn:
            with conn.cursor().copy(
                "COPY tasks (id, tenant, name, status, priority, payload, enqueued_at) FROM STDIN"
            ) as cp:
                for tid in ids:
                    cp.write_row((tid, tenant, "noop", "QUEUED", "normal", '{"n":1}', "now"))
        r = env.redis()
        for i in range(0, n, 1000):
            r.lpush(QUEUE_KEY, *ids[i : i + 1000])
        cpu0 = [p.cpu_seconds() for p in procs]
        servers0 = env.server_cpu()
        t_release = time.time()
        r.lpush(GO_KEY, *(["go"] * workers))
        with env.connect() as conn:

            def done() -> Any:
                if r.llen(QUEUE_KEY) > 0:
                    return None
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), extract(epoch FROM max(finished_at)) "
                    "FROM tasks WHERE tenant = %s",
                    (tenant,),
                ).fetchone()
                return row if row and cast(int, row[0]) >= n else None

            row = wait_for(done, timeout=timeout, interval=0.1, what="naive drain")
        cpu = sum(p.cpu_seconds() - c for p, c in zip(procs, cpu0, strict=True))
        servers = env.server_cpu_delta(servers0)
        rss = max(p.hwm_mb() for p in procs)
    finally:
        for p in procs:
            p.stop()
    seconds = float(row[1]) - t_release
    return {
        "workers": workers,
        "n": n,
        "rate": rate(n, seconds),
        "seconds": seconds,
        "cpu_s_per_1000": cpu / n * 1000 + submit_cpu_ms,
        "worker_cpu_s_per_1000": cpu / n * 1000,
        "submit_cpu_s_per_1000": submit_cpu_ms,
        "worker_rss_mb": rss,
        "pg_cpu_s_per_1000": servers["pg"] / n * 1000,
        "redis_cpu_s_per_1000": servers["redis"] / n * 1000,
        "ceiling_2_cores": 2.0 / ((cpu + servers["pg"] + servers["redis"]) / n),
    }


def _completed(conn: psycopg.Connection[tuple[object, ...]], tenant: str) -> int:
    row = conn.execute("SELECT count(*) FROM tasks WHERE tenant = %s AND status = 'COMPLETED'", (tenant,)).fetchone()
    assert row is not None  # an aggregate without GROUP BY always has its one row
    return cast(int, row[0])


def _burst(env: BenchEnv, r: redis.Redis, n: int, timeout: float = 240) -> float:
    """``n`` noop tasks (COPY + LPUSH) drained by the running worker: the table then
    holds a burst's dead row versions, as in Tasklane's ``latency_burst``."""
    tenant = "naive-burst-" + uuid.uuid4().hex[:6]
    ids = [str(uuid.uuid4()) for _ in range(n)]
    start = time.perf_counter()
    copy = "COPY tasks (id, tenant, name, status, priority, payload, enqueued_at) FROM STDIN"
    with env.connect() as conn:
        with conn.cursor().copy(copy) as cp:
            for tid in ids:
                cp.write_row((tid, tenant, "noop", "QUEUED", "normal", '{"n":1}', "now"))
        for i in range(0, n, 1000):
            r.lpush(QUEUE_KEY, *ids[i : i + 1000])
        wait_for(
            lambda: r.llen(QUEUE_KEY) == 0 and _completed(conn, tenant) >= n,
            timeout=timeout,
            interval=0.1,
            what="the naive burst to drain",
        )
    return time.perf_counter() - start


def latency_run(env: BenchEnv, *, per_second: float, count: int, burst: int = 0) -> dict[str, Any]:
    """Submits at a steady rate with one worker; with ``burst``, that many tasks are
    drained first and the steady run starts straight after."""
    env.flush_redis()
    env.truncate()
    procs = _start(env, 1)
    r = env.redis()
    r.lpush(GO_KEY, "go")
    c = NaiveClient(env.database_url, env.redis_url)
    tenant = "naive-lat-" + uuid.uuid4().hex[:6]
    try:
        burst_seconds = _burst(env, r, burst) if burst else 0.0

        def one(i: int) -> None:
            c.submit(tenant, "bench_stamp", {"t0": time.time()})

        sent, seconds = paced(per_second, count, count / per_second * 1.5 + 5, one)
        with env.connect() as conn:
            wait_for(
                lambda: _completed(conn, tenant) >= sent,
                timeout=60,
                interval=0.1,
                what="naive latency tasks",
            )
            # The same three figures as Tasklane's latency_run: the executor's start, the
            # DB clock's created_at -> started_at, and the client's call -> finished_at
            # (the outcome statement's now(), on the same host clock; its commit follows).
            rows = conn.execute(
                """SELECT (result->>'t1')::float8 - (payload->>'t0')::float8,
                          extract(epoch FROM started_at - created_at)::float8,
                          extract(epoch FROM finished_at)::float8 - (payload->>'t0')::float8
                   FROM tasks WHERE tenant = %s""",
                (tenant,),
            ).fetchall()
    finally:
        c.close()
        for p in procs:
            p.stop()
    lat = [cast(float, x[0]) for x in rows]  # float8 - float8
    db_lat = [cast(float, x[1]) for x in rows]
    finish_lat = [cast(float, x[2]) for x in rows]
    return {
        "achieved_rate": rate(sent, seconds),
        **stats.latency_summary(lat),
        "db_p50_ms": stats.percentile(db_lat, 50) * 1000,
        "db_p99_ms": stats.percentile(db_lat, 99) * 1000,
        "finish_p50_ms": stats.percentile(finish_lat, 50) * 1000,
        "finish_p99_ms": stats.percentile(finish_lat, 99) * 1000,
        "burst": burst,
        "burst_seconds": burst_seconds,
    }


def _nan() -> float:
    return math.nan


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        sys.exit(worker(sys.argv[2], sys.argv[3]))
    print("usage: python -m bench.naive worker DATABASE_URL REDIS_URL", file=sys.stderr)
    sys.exit(2)
