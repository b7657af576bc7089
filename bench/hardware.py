"""What the servers and the disk can do at all, measured in the same run: the
ceilings Tasklane's numbers are read against."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from bench.common import rate
from bench.env import BenchEnv

TABLE = "bench_hw_rows"


def _table(env: BenchEnv) -> None:
    with env.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(
            f"CREATE TABLE {TABLE} (id uuid PRIMARY KEY, payload jsonb NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )


def pg_single_insert(env: BenchEnv, *, seconds: float, max_count: int = 100_000) -> dict[str, Any]:
    """Autocommit single-row INSERTs, one at a time: the commit (WAL fsync) rate."""
    _table(env)
    with env.connect() as conn:
        q = f"INSERT INTO {TABLE} (id, payload) VALUES (%s, %s::jsonb)"
        for _ in range(10):
            conn.execute(q, (uuid.uuid4(), '{"n":1}'))
        n = 0
        start = time.perf_counter()
        while n < max_count and time.perf_counter() - start < seconds:
            conn.execute(q, (uuid.uuid4(), '{"n":1}'))
            n += 1
        wall = time.perf_counter() - start
    return {"rate": rate(n, wall), "ms_per_commit": wall / n * 1000}


def pg_multirow_insert(env: BenchEnv, *, seconds: float, rows: int = 500, max_calls: int = 2000) -> dict[str, Any]:
    """INSERT ... VALUES (...) x 500 per statement (autocommit): rows/s."""
    _table(env)
    q = f"INSERT INTO {TABLE} (id, payload) VALUES " + ", ".join(["(%s, %s::jsonb)"] * rows)
    with env.connect() as conn:
        calls = 0
        start = time.perf_counter()
        while calls < max_calls and time.perf_counter() - start < seconds:
            params: list[Any] = []
            for _ in range(rows):
                params += [uuid.uuid4(), '{"n":1}']
            conn.execute(q, params)
            calls += 1
        wall = time.perf_counter() - start
    return {"rate": rate(calls * rows, wall)}


def pg_copy(env: BenchEnv, *, seconds: float, rows: int = 20_000, max_calls: int = 200) -> dict[str, Any]:
    """COPY ... FROM STDIN, 20,000 rows per COPY (each its own transaction): rows/s."""
    _table(env)
    with env.connect() as conn:
        calls = 0
        start = time.perf_counter()
        while calls < max_calls and time.perf_counter() - start < seconds:
            with conn.cursor().copy(f"COPY {TABLE} (id, payload) FROM STDIN") as cp:
                for _ in range(rows):
                    cp.write_row((uuid.uuid4(), '{"n":1}'))
            calls += 1
        wall = time.perf_counter() - start
    return {"rate": rate(calls * rows, wall)}


def redis_lpush(env: BenchEnv, *, seconds: float, pipeline: int = 1, max_ops: int = 2_000_000) -> dict[str, Any]:
    """LPUSH one id per command; ``pipeline`` commands per round trip."""
    r = env.redis()
    key = "bench:hw:list"
    r.delete(key)
    value = str(uuid.uuid4())
    ops = 0
    start = time.perf_counter()
    if pipeline == 1:
        while ops < max_ops and time.perf_counter() - start < seconds:
            r.lpush(key, value)
            ops += 1
    else:
        while ops < max_ops and time.perf_counter() - start < seconds:
            pipe = r.pipeline(transaction=False)
            for _ in range(pipeline):
                pipe.lpush(key, value)
            pipe.execute()
            ops += pipeline
    wall = time.perf_counter() - start
    r.delete(key)
    return {"rate": rate(ops, wall)}


def cleanup(env: BenchEnv) -> None:
    with env.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def fsync_method(env: BenchEnv) -> dict[str, Any]:
    """The server settings that bound commit latency (read only)."""
    with env.connect() as conn:
        names = ["fsync", "synchronous_commit", "wal_sync_method", "commit_delay", "shared_buffers", "server_version"]
        return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}  # type: ignore[index]


__all__ = ["cleanup", "fsync_method", "json", "pg_copy", "pg_multirow_insert", "pg_single_insert", "redis_lpush"]
