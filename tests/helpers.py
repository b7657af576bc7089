"""Test helpers: waiting with deadlines, building requests, counting states."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from chalicelib.drain import Drainer
from chalicelib.runtime import Runtime
from chalicelib.sweep import sweep
from chalicelib.tasks import Priority
from chalicelib.validation import TaskRequest

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.02, message: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)
        last = condition()
    return last


def request(name: str = "noop", payload: dict[str, Any] | None = None, **kw: Any) -> TaskRequest:
    return TaskRequest(
        name=name,
        payload=payload if payload is not None else {},
        priority=Priority(kw.pop("priority", "normal")),
        run_at=kw.pop("run_at", None),
        delay_seconds=kw.pop("delay_seconds", None),
        max_retries=kw.pop("max_retries", 3),
        timeout_seconds=kw.pop("timeout_seconds", 30),
        idempotency_key=kw.pop("idempotency_key", None),
    )


def drain_once(rt: Runtime, seconds: float = 2.0, drainer: Drainer | None = None) -> dict[str, Any]:
    """Run one drain invocation with a short budget (exits early when idle)."""
    d = drainer or Drainer(rt, name="test-drain")
    deadline = time.monotonic() + seconds
    try:
        return d.run(lambda: deadline - time.monotonic(), idle_exit_seconds=0.2).as_dict()
    finally:
        if drainer is None:
            d.close()


def drain_and_sweep_until(rt: Runtime, done: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Alternate drain and sweep (as the scheduler would) until ``done()``."""
    drainer = Drainer(rt, name="test-drain")
    try:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("timed out draining")
            budget = time.monotonic() + 0.5
            drainer.run(lambda b=budget: b - time.monotonic(), idle_exit_seconds=0.05)
            sweep(rt)
    finally:
        drainer.close()


def status_counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    return {status: count for status, count in rows}


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
