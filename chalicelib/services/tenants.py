"""Per-tenant weights and quotas: what a tenant may queue (checked at submit) and the
copy of weights and running quotas the claim script reads (synced by the sweeper).

PostgreSQL's ``tenant_limits`` is the source (managed by ``tools.cli tenants``).  A
process reads a tenant's row at most once per ``CACHE_SECONDS``, so a submit costs no
query and, for a tenant without a max_queued quota, no Redis call either.
"""

from __future__ import annotations

import threading
import time

from chalicelib.container import Container
from chalicelib.core.errors import QueueError, QuotaExceededError
from chalicelib.core.tenants import DEFAULT_WEIGHT, TenantLimits
from chalicelib.observability.log import logger

CACHE_SECONDS = 5.0
RETRY_AFTER_SECONDS = 5  # a full queue drains at the tenant's share of the drainers: come back in a while

_cache: dict[tuple[int, str], tuple[float, TenantLimits]] = {}
_cache_lock = threading.Lock()


def limits_of(rt: Container, tenant: str) -> TenantLimits:
    """The tenant's limits (defaults without a row), at most ``CACHE_SECONDS`` old."""
    key = (id(rt.store), tenant)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    rows = rt.store.list_tenant_limits(tenant)
    limits = rows[0] if rows else TenantLimits.default(tenant)
    with _cache_lock:
        if len(_cache) > 10_000:  # many tenants: forget them all rather than grow without bound
            _cache.clear()
        _cache[key] = (now, limits)
    return limits


def forget_cached() -> None:
    """Drop every cached row (tests, and a CLI run in-process)."""
    with _cache_lock:
        _cache.clear()


def check_queue_quota(rt: Container, tenant: str, adding: int) -> None:
    """Refuse ``adding`` more tasks when they would take the tenant's ready tasks past
    its max_queued: ``QuotaExceededError`` (429, Retry-After).  The count is Redis's
    (the tenant's ready set, O(1)), never a COUNT(*) over its tasks; concurrent
    submits may overshoot by what is in flight at that moment.  Redis away: allowed
    (PostgreSQL takes the task; the limit is a guard, not the source of truth)."""
    limits = limits_of(rt, tenant)
    if limits.max_queued is None or adding <= 0:
        return
    try:
        queued = rt.queue.queued_count(tenant)
    except QueueError as exc:
        logger.warning("queue quota not checked: Redis unavailable", extra={"tenant": tenant, "error": str(exc)})
        return
    if queued + adding <= limits.max_queued:
        return
    logger.info(
        "submit refused: tenant queue quota",
        extra={"tenant": tenant, "limit": limits.max_queued, "queued": queued, "requested": adding},
    )
    try:
        rt.queue.count_refusal(tenant, "max_queued", adding)
    except QueueError:
        pass  # the counter is for dashboards; the refusal stands
    raise QuotaExceededError(
        f"tenant {tenant!r} may have at most {limits.max_queued} tasks queued; {queued} are,"
        f" and this request adds {adding}; retry after {RETRY_AFTER_SECONDS} s",
        details={
            "quota": "max_queued",
            "limit": limits.max_queued,
            "queued": queued,
            "requested": adding,
            "retry_after_seconds": RETRY_AFTER_SECONDS,
        },
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def sync_to_queue(rt: Container) -> int:
    """Copy every configured weight and max_running to Redis for the claim script
    (the sweeper, each sweep); returns how many tenants are configured."""
    rows = rt.store.list_tenant_limits()
    weights = {r.tenant: r.weight for r in rows if r.weight != DEFAULT_WEIGHT}
    running = {r.tenant: r.max_running for r in rows if r.max_running is not None}
    rt.queue.set_tenant_limits(weights, running)
    return len(rows)


def usage(rt: Container, tenant: str) -> dict[str, object]:
    """The tenant's limits and what it uses of them now (the stats API and dashboard):
    ready tasks in Redis and, with a max_running quota, running slots taken."""
    limits = limits_of(rt, tenant)
    try:
        ready, running = rt.queue.tenant_depths([tenant])[tenant]
    except QueueError:
        ready, running = -1, -1
    return {
        **limits.as_dict(),
        "queued": ready if ready >= 0 else None,
        "running": running if running >= 0 and limits.max_running is not None else None,
    }
