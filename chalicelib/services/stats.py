"""The queue as numbers for people: ``GET /api/v1/stats`` (the dashboard and the
CLI's ``stats``), the sweeper's freshness for ``/health``, and the observability
settings.

Stats are tenant-scoped and computed from PostgreSQL (the source of truth) in one
read-only snapshot, so the numbers add up.  "Today" starts at 00:00 UTC by the
database's clock; the per-minute series covers the last 60 minutes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.container import Container
from chalicelib.core.errors import TasklaneError, ValidationError
from chalicelib.core.model import Priority
from chalicelib.core.stats import StatsSnapshot

AWS_SWEEP_PERIOD_SECONDS = 60.0  # app.py schedules sweep at Rate(1 minute)


@dataclass(frozen=True)
class ObservabilitySettings:
    """``TASKLANE_METRICS_TOKEN``: the bearer token ``/metrics`` requires (unset: the
    endpoint answers 403); in AWS ``TASKLANE_METRICS_TOKEN_SECRET_ARN`` names a
    Secrets Manager secret holding it instead.  ``TASKLANE_SWEEP_STALE_SECONDS``: the sweeper is DOWN in
    ``/health`` when no sweep finished for this long; default
    3 * max(``TASKLANE_SWEEP_INTERVAL_SECONDS``, 60 s), since in AWS the sweep runs
    once a minute whatever the local interval says."""

    metrics_token: str | None
    sweep_stale_seconds: float

    @classmethod
    def from_env(cls, sweep_interval_seconds: float, env: Mapping[str, str] | None = None) -> ObservabilitySettings:
        e = os.environ if env is None else env
        raw = e.get("TASKLANE_SWEEP_STALE_SECONDS") or ""
        default = 3 * max(sweep_interval_seconds, AWS_SWEEP_PERIOD_SECONDS)
        try:
            stale = float(raw) if raw else default
        except ValueError:
            raise ValueError(f"TASKLANE_SWEEP_STALE_SECONDS must be a number, got {raw!r}") from None
        if stale <= 0:
            raise ValueError("TASKLANE_SWEEP_STALE_SECONDS must be > 0")
        token = e.get("TASKLANE_METRICS_TOKEN") or None
        if token is None and e.get("TASKLANE_METRICS_TOKEN_SECRET_ARN"):  # AWS: the token is a secret
            from chalicelib.adapters.aws.secrets import read_secret_string

            token = read_secret_string(e["TASKLANE_METRICS_TOKEN_SECRET_ARN"])
        return cls(metrics_token=token, sweep_stale_seconds=stale)


_settings: ObservabilitySettings | None = None
_lock = threading.Lock()


def observability_settings(rt: Container) -> ObservabilitySettings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = ObservabilitySettings.from_env(rt.settings.sweep_interval_seconds)
        return _settings


# --- the sweeper's freshness -------------------------------------------------------------

_first_missing: float | None = None


def sweeper_component(last_sweep: float | None, stale_after: float, now: float | None = None) -> dict[str, Any]:
    """``/health``'s sweeper component from the last sweep time (epoch seconds).

    No sweep recorded (a fresh or flushed Redis) is UNKNOWN for one stale window from
    when this process first noticed, then DOWN: a sweeper that never runs is caught
    without failing every health check right after a Redis restart."""
    global _first_missing
    now = time.time() if now is None else now
    if last_sweep is None:
        _first_missing = _first_missing or now
        waited = now - _first_missing
        return {
            "status": "DOWN" if waited > stale_after else "UNKNOWN",
            "last_sweep_at": None,
            "stale_after_seconds": stale_after,
            "message": f"no sweep recorded in Redis for {waited:.0f} s",
        }
    _first_missing = None
    age = max(now - last_sweep, 0.0)
    component: dict[str, Any] = {
        "status": "UP" if age <= stale_after else "DOWN",
        "last_sweep_at": datetime.fromtimestamp(last_sweep, UTC).isoformat(),
        "age_seconds": round(age, 3),
        "stale_after_seconds": stale_after,
    }
    if age > stale_after:
        component["message"] = f"no sweep for {age:.0f} s (limit {stale_after:g} s): is the sweep schedule running?"
    return component


def sweeper_status(rt: Container) -> dict[str, Any]:
    try:
        last = rt.queue.last_sweep()
    except TasklaneError as exc:
        return {"status": "UNKNOWN", "message": f"Redis is unreachable: {exc.message}"}
    return sweeper_component(last, observability_settings(rt).sweep_stale_seconds)


# --- tenant stats -----------------------------------------------------------------------

_COUNT_FIELDS = ("submitted", "completed", "failed", "cancelled", "queued", "pending", "processing", "dead_letters")


class _Acc:
    """Sums for one group (a name, a priority, or everything)."""

    def __init__(self) -> None:
        self.n: dict[str, int] = dict.fromkeys(_COUNT_FIELDS, 0)
        self.run_seconds = 0.0
        self.wait_seconds = 0.0
        self.timed = 0
        self.oldest: datetime | None = None

    def as_dict(self, now: datetime) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.n)
        out["queue_size"] = self.n["queued"] + self.n["pending"]
        out["avg_run_seconds"] = round(self.run_seconds / self.timed, 4) if self.timed else None
        out["avg_wait_seconds"] = round(self.wait_seconds / self.timed, 4) if self.timed else None
        out["oldest_queued_age_seconds"] = (
            round(max((now - self.oldest).total_seconds(), 0.0), 3) if self.oldest is not None else None
        )
        return out


_LIVE = {"QUEUED": "queued", "PENDING": "pending", "PROCESSING": "processing", "FAILED": "dead_letters"}
_FINAL = {"COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled"}


def build_stats(raw: StatsSnapshot) -> dict[str, Any]:
    """Shape ``Store.tenant_stats`` into the API's JSON (no I/O)."""
    now = raw.clock.now
    total = _Acc()
    by_name: dict[str, _Acc] = defaultdict(_Acc)
    by_priority: dict[str, _Acc] = {p.value: _Acc() for p in Priority}

    def groups(name: str, priority: str) -> list[_Acc]:
        return [total, by_name[name], by_priority.setdefault(priority, _Acc())]

    for live in raw.live:
        for acc in groups(live.name, live.priority):
            acc.n[_LIVE[live.status]] += live.n
            oldest = live.oldest_enqueued_at
            if live.status == "QUEUED" and oldest is not None:
                acc.oldest = min(acc.oldest or oldest, oldest)
    for sub in raw.submitted:
        for acc in groups(sub.name, sub.priority):
            acc.n["submitted"] += sub.n
    for fin in raw.finished:
        field = _FINAL.get(fin.status)
        if field is None:
            continue
        for acc in groups(fin.name, fin.priority):
            acc.n[field] += fin.n
            if fin.status == "COMPLETED":
                acc.run_seconds += fin.run_seconds
                acc.wait_seconds += fin.wait_seconds
                acc.timed += fin.timed

    start = raw.clock.hour_start
    minutes = [start + timedelta(minutes=i) for i in range(60)]
    series: dict[datetime, dict[str, int]] = {
        m: {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0} for m in minutes
    }
    for count in raw.per_minute:
        slot = series.get(count.minute)
        kind = "submitted" if count.kind == "SUBMITTED" else _FINAL.get(count.kind)
        if slot is not None and kind is not None:
            slot[kind] += count.n

    return {
        "generated_at": now.isoformat(),
        "today_since": raw.clock.today.isoformat(),
        "totals": total.as_dict(now),
        "by_priority": [{"priority": p, **acc.as_dict(now)} for p, acc in by_priority.items()],
        "by_name": [{"name": n, **by_name[n].as_dict(now)} for n in sorted(by_name)],
        "per_minute": [{"minute": m.isoformat(), **series[m]} for m in minutes],
    }


def tenant_stats(rt: Container, tenant: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /api/v1/stats`` for ``tenant``."""
    if query:
        unknown = ", ".join(sorted(query))
        raise ValidationError(
            f"unknown query parameter(s) {unknown}; this route takes none", details={"fields": unknown}
        )
    body = build_stats(rt.store.tenant_stats(tenant))
    body["tenant"] = tenant
    body["sweeper"] = sweeper_status(rt)
    return body
