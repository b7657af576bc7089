"""The queue's counters and read-only views (metrics, health, quotas), summed over the
queue partitions: a mixin of ``queue.Queue``, which holds the client and the keys."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from chalicelib.adapters.redis.client import RedisLike, as_text, translate
from chalicelib.adapters.redis.keys import Keys
from chalicelib.config import TypeLimit


class QueueViews:
    """Reads of ``Queue``'s sets; every Redis error leaves as ``QueueError``."""

    client: RedisLike
    keys: Keys
    parts: list[Keys]
    limits: dict[str, TypeLimit]

    def queued_count(self, tenant: str) -> int:
        """The tenant's ready tasks (types without limits): what its max_queued bounds."""
        with translate():
            if len(self.parts) == 1:
                return int(self.client.zcard(self.keys.tenant_ready(tenant)))
            pipe = self.client.pipeline(transaction=False)
            for part in self.parts:
                pipe.zcard(part.tenant_ready(tenant))
            return sum(int(n) for n in pipe.execute())

    def count_refusal(self, tenant: str, quota: str, tasks: int) -> None:
        with translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(self.keys.quota_refused, f"{quota}:{tenant}", tasks)
            pipe.execute()

    def refusals(self) -> dict[tuple[str, str], int]:
        """``{(quota, tenant): tasks refused}`` since Redis last lost its data."""
        with translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.quota_refused)
            (raw,) = pipe.execute()
        out: dict[tuple[str, str], int] = {}
        for field, n in raw.items():
            quota, _, tenant = as_text(field).partition(":")
            out[(quota, tenant)] = int(n)
        return out

    def depths(self) -> dict[str, int]:
        """Sizes of ready (limited types' sets included), delayed and leases."""
        snap = self.snapshot()
        return {k: int(snap[k] or 0) for k in ("ready", "delayed", "leased")}

    def ping(self) -> None:
        with translate():
            self.client.ping()

    def mark_swept(self) -> None:
        """Record that a sweep just finished (health and metrics read it)."""
        with translate():
            self.client.set(self.keys.last_sweep, f"{time.time():.3f}")

    def last_sweep(self) -> float | None:
        """When a sweep last finished (epoch seconds), None if none is recorded; one
        round trip that also proves Redis answers."""
        with translate():
            return _epoch(self.client.get(self.keys.last_sweep))

    def tenant_depths(self, tenants: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
        """``{tenant: (ready, running)}`` for ``tenants`` (None: the active ones, of any
        partition); ready sums the tenant's ready sets over the partitions; running is
        counted only for tenants with a max_running quota (0 otherwise)."""
        parts = self.parts
        with translate():
            if tenants is None:
                pipe = self.client.pipeline(transaction=False)  # a cluster client has pipelines, not SMEMBERS
                for part in parts:
                    pipe.smembers(part.active_tenants)
                tenants = {as_text(r) for raw in pipe.execute() for r in raw}
            names = sorted(set(tenants))
            if not names:
                return {}
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.zcount(self.keys.tenant_running(name), f"({int(time.time() * 1000)}", "+inf")
                for part in parts:
                    pipe.zcard(part.tenant_ready(name))
            counts = pipe.execute()
        step = len(parts) + 1
        return {
            name: (sum(int(n) for n in counts[i * step + 1 : (i + 1) * step]), int(counts[i * step]))
            for i, name in enumerate(names)
        }

    def snapshot(self) -> dict[str, float | None]:
        """Sizes of ready, delayed and leases (every partition's) plus the last sweep time."""
        tenants = self.tenant_depths()
        with translate():
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.keys.last_sweep)
            for part in self.parts:
                pipe.zcard(part.delayed)
                pipe.zcard(part.leases)
            for name in self.limits:
                pipe.zcard(self.keys.typed_ready(name))
            raw, *counts = pipe.execute()
        n = len(self.parts)
        delayed = sum(int(c) for c in counts[0 : 2 * n : 2])
        leased = sum(int(c) for c in counts[1 : 2 * n : 2])
        ready = sum(r for r, _ in tenants.values()) + sum(int(c) for c in counts[2 * n :])
        return {"ready": ready, "delayed": delayed, "leased": leased, "last_sweep": _epoch(raw)}


def _epoch(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        return float(as_text(raw))
    except ValueError:
        return None
