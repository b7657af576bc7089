"""Dramatiq actors for the peer comparison (``dramatiq bench.peer_dramatiq_app``).

Redis broker on the bench's db (``BENCH_REDIS_URL``).  The workers wait for a go
token before they start consuming (so every process starts at one instant), and
publish per-process counts and first/last execution times to Redis a few times a
second, so the bench measures them without a per-message round trip."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from redis.typing import EncodableT, FieldT

# Set by the bench to its private Redis: never a default that could be someone else's.
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or sys.exit("BENCH_REDIS_URL is not set: run this under python -m bench")
GO_KEY = "bench:dramatiq:go"
STATS_PREFIX = "bench:dramatiq:stats:"
LATENCY_KEY = "bench:dramatiq:latency"


class BenchStats(Middleware):
    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.client: redis.Redis | None = None

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        self.client = redis.Redis.from_url(REDIS_URL)
        if os.environ.get("BENCH_WAIT_GO") == "1":
            self.client.blpop([GO_KEY], timeout=300)
        threading.Thread(target=self._flusher, daemon=True).start()

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        now = time.time()
        with self.lock:
            self.count += 1
            self.last = now
            if not self.first:
                self.first = now

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.stop.set()
        self._flush()

    def _flusher(self) -> None:
        seen = -1
        while not self.stop.wait(0.05):
            if self.count != seen:
                seen = self.count
                self._flush()

    def _flush(self) -> None:
        if self.client is None:
            return
        with self.lock:
            data: dict[FieldT, EncodableT] = {"count": self.count, "first": self.first, "last": self.last}
        self.client.hset(f"{STATS_PREFIX}{os.getpid()}", mapping=data)


broker = RedisBroker(url=REDIS_URL)
broker.add_middleware(BenchStats())
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0, queue_name="bench")
def noop(n: int) -> int:
    return n


_lat_client: redis.Redis | None = None


@dramatiq.actor(max_retries=0, queue_name="bench")
def stamp(t0: float) -> None:
    t1 = time.time()
    global _lat_client
    if _lat_client is None:
        _lat_client = redis.Redis.from_url(REDIS_URL)
    _lat_client.rpush(LATENCY_KEY, t1 - t0)
