"""Procrastinate app for the peer comparison: PostgreSQL only (jobs, events and
LISTEN/NOTIFY), durable like Tasklane.  ``python -m bench.peer_procrastinate_app
worker`` runs one worker process."""

from __future__ import annotations

import os
import sys
import time

import procrastinate

DSN = os.environ.get("BENCH_PROCRASTINATE_DSN", "")
# Set by the bench to its private Redis: never a default that could be someone else's.
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or sys.exit("BENCH_REDIS_URL is not set: run this under python -m bench")
LATENCY_KEY = "bench:procrastinate:latency"
CONCURRENCY = 8

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DSN))

_lat_client = None


@app.task(name="noop", queue="bench")
async def noop(n: int) -> int:
    return n


@app.task(name="stamp", queue="bench")
async def stamp(t0: float) -> None:
    t1 = time.time()
    global _lat_client
    if _lat_client is None:
        import redis

        _lat_client = redis.Redis.from_url(REDIS_URL)
    _lat_client.rpush(LATENCY_KEY, t1 - t0)


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        app.run_worker(queues=["bench"], concurrency=CONCURRENCY, wait=True, listen_notify=True)
        sys.exit(0)
    print("usage: python -m bench.peer_procrastinate_app worker", file=sys.stderr)
    sys.exit(2)
