"""Health: is PostgreSQL answering, is Redis answering, is the sweeper running?

Two round trips (one each to PostgreSQL and Redis), cheap enough for a load balancer
every second.  The db probe reads the applied migration version; the sweeper's
freshness is the age of the last sweep marker in Redis.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from chalicelib.container import Container
from chalicelib.core.errors import QueueError, UnavailableError


class Condition(StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    UNKNOWN = "UNKNOWN"  # cannot tell yet (no sweep recorded) or cannot look (Redis down)


@dataclass(frozen=True)
class Probe:
    """PostgreSQL or Redis: UP with the round trip's latency, or DOWN with the error."""

    condition: Condition
    latency_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class SweeperHealth:
    condition: Condition
    stale_after_seconds: float | None = None  # None: Redis could not be asked
    last_sweep_at: datetime | None = None
    age_seconds: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class HealthReport:
    db: Probe
    redis: Probe
    sweeper: SweeperHealth
    migration_version: int | None

    @property
    def condition(self) -> Condition:
        """DOWN when any component is DOWN; an UNKNOWN sweeper alone does not fail it."""
        parts = (self.db.condition, self.redis.condition, self.sweeper.condition)
        return Condition.DOWN if Condition.DOWN in parts else Condition.UP


def health(rt: Container) -> HealthReport:
    version: int | None = None
    start = time.perf_counter()
    try:
        version = rt.store.schema_version()
        db = Probe(Condition.UP, latency_ms=_ms_since(start))
    except UnavailableError as exc:
        db = Probe(Condition.DOWN, error=exc.message)
    start = time.perf_counter()
    try:
        last_sweep = rt.queue.last_sweep()
        redis = Probe(Condition.UP, latency_ms=_ms_since(start))
        sweeper = sweeper_health(last_sweep, rt.settings.sweeper_stale_after)
    except QueueError as exc:
        redis = Probe(Condition.DOWN, error=exc.message)
        sweeper = SweeperHealth(Condition.UNKNOWN, message="Redis is unreachable")
    return HealthReport(db, redis, sweeper, version)


def sweeper_status(rt: Container) -> SweeperHealth:
    """The sweeper's freshness alone (the stats page shows it)."""
    try:
        last = rt.queue.last_sweep()
    except QueueError as exc:
        return SweeperHealth(Condition.UNKNOWN, message=f"Redis is unreachable: {exc.message}")
    return sweeper_health(last, rt.settings.sweeper_stale_after)


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


_first_missing: float | None = None
_missing_lock = threading.Lock()


def sweeper_health(last_sweep: float | None, stale_after: float, now: float | None = None) -> SweeperHealth:
    """The sweeper's condition from the last sweep time (epoch seconds).

    No sweep recorded (a fresh or flushed Redis) is UNKNOWN for one stale window from
    when this process first noticed, then DOWN: a sweeper that never runs is caught
    without failing every health check right after a Redis restart."""
    global _first_missing
    now = time.time() if now is None else now
    if last_sweep is None:
        with _missing_lock:
            _first_missing = _first_missing or now
            waited = now - _first_missing
        return SweeperHealth(
            Condition.DOWN if waited > stale_after else Condition.UNKNOWN,
            stale_after_seconds=stale_after,
            message=f"no sweep recorded in Redis for {waited:.0f} s",
        )
    with _missing_lock:
        _first_missing = None
    age = max(now - last_sweep, 0.0)
    stale = age > stale_after
    return SweeperHealth(
        Condition.DOWN if stale else Condition.UP,
        stale_after_seconds=stale_after,
        last_sweep_at=datetime.fromtimestamp(last_sweep, UTC),
        age_seconds=round(age, 3),
        message=f"no sweep for {age:.0f} s (limit {stale_after:g} s): is the sweep schedule running?"
        if stale
        else None,
    )
