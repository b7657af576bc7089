"""Shared workload plumbing: timing loops, waiting with deadlines, readiness checks."""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

T = TypeVar("T")


class BenchError(RuntimeError):
    """A workload could not run (a peer failed to start, a deadline passed, ...)."""


def wait_for(condition: Callable[[], T | None], *, timeout: float, interval: float = 0.02, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what or condition}")
        time.sleep(interval)


def self_cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def backend_cpu_ns(pid: int) -> int:
    """CPU nanoseconds a process (a PostgreSQL backend the caller's connection owns, so
    that nothing else runs on it) has used so far: ``/proc/<pid>/schedstat``'s first field,
    exact where getrusage of another process would round to clock ticks."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def blocked_clients(r: redis.Redis, db: int, commands: tuple[str, ...]) -> int:
    """How many clients of ``db`` are blocked in one of ``commands`` (idle workers)."""
    n = 0
    for c in r.client_list():
        if str(c.get("db")) == str(db) and c.get("cmd") in commands:
            n += 1
    return n


def paced(rate: float, count: int, max_seconds: float, fn: Callable[[int], None]) -> tuple[int, float]:
    """Call ``fn(i)`` at ``rate`` per second (open loop: a late call does not push the
    schedule back), at most ``count`` times and ``max_seconds``.  Returns (calls, seconds)."""
    start = time.perf_counter()
    interval = 1.0 / rate
    done = 0
    for i in range(count):
        due = start + i * interval
        now = time.perf_counter()
        if now - start > max_seconds:
            break
        if due > now:
            time.sleep(due - now)
        fn(i)
        done += 1
    return done, time.perf_counter() - start


def rate(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else math.nan
