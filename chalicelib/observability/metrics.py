"""What the queue is doing: Prometheus metrics and the task event log lines.

**Metrics** (``GET /metrics``, Prometheus text format, built with ``prometheus_client``)
are correct however many API, drain and sweep processes run, because no process
counts anything in its own memory:

- Counters and histograms by task name are kept by PostgreSQL: a trigger on
  ``task_events`` (migration 0003) turns every transition statement into counter
  deltas *in the same transaction as the transition*, so they match the tasks
  table exactly, survive a Redis flush and cost no extra round trip on the hot
  path.  Deletions are no transitions: the prune and purge statements write their
  own ``pruned``/``purged`` deltas.  The sweeper folds the deltas into totals (``fold``).
- Gauges are read at scrape time from the source of truth: live tasks by state and
  priority from PostgreSQL (each arm served by a partial index), the Redis
  structures' sizes and the last sweep time from Redis.

**Event logs** (``log_*``): JSON lines through the Powertools logger with the task
id, name, tenant, attempt, duration and outcome.  Per task and per batch at DEBUG,
a drainer's batches summed into one INFO line every few seconds (``batchlog``), dead
letters per task at WARNING.  Payloads, results and
API keys are never logged; error messages are cut to 200 characters.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.core.audit import Purged
from chalicelib.core.control import Pause, PausedGauge
from chalicelib.core.errors import QueueError, UnavailableError
from chalicelib.core.model import Claimed, Outcome, Priority, Status, Task
from chalicelib.core.records import Recorded
from chalicelib.core.stats import MetricTotal, QueueGauge
from chalicelib.observability.log import logger

if TYPE_CHECKING:
    from prometheus_client.core import Metric

# prometheus_client is imported by the functions that build a scrape, not here: every
# function's first call imports this module (for the event log lines), and only
# ``GET /metrics`` needs the exposition (tests/unit/test_cold_start.py).

# The Prometheus text format every scraper understands (0.0.4; same bytes as the
# newer content type for names like ours).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Histogram bucket bounds in seconds (+Inf is implied).  Migration 0003's trigger
# buckets observations with the same list; tests/unit/test_metrics.py holds them equal.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip

# metric key written by the trigger -> (Prometheus name without _total, help)
COUNTERS: dict[str, tuple[str, str]] = {
    "submitted": ("tasklane_tasks_submitted", "Tasks accepted (API, batch, schedules)."),
    "started": ("tasklane_tasks_started", "Attempts started: a drainer claimed the task."),
    "completed": ("tasklane_tasks_completed", "Tasks that completed."),
    "failed": ("tasklane_tasks_failed", "Attempts that failed (then retried or dead-lettered)."),
    "retried": ("tasklane_tasks_retried", "Failed attempts scheduled for a retry."),
    "dead_lettered": ("tasklane_tasks_dead_lettered", "Tasks that reached FAILED (the dead-letter queue)."),
    "cancelled": ("tasklane_tasks_cancelled", "Tasks cancelled (waiting, or honoured while running)."),
    "redriven": ("tasklane_tasks_redriven", "Dead letters sent back to QUEUED."),
    "rescued": (
        "tasklane_tasks_rescued",
        "Attempts whose lease expired (worker died or stalled); also failed, or cancelled when that was requested.",
    ),
    "snoozed": ("tasklane_tasks_snoozed", "Attempts that snoozed the task (no failure; the attempt is given back)."),
    "expired": ("tasklane_tasks_expired", "Waiting tasks past their expires_at, never started (also cancelled)."),
    # Written by the prune_finished, purge_dead_letters and unique_key_holders statements.
    "deduplicated": ("tasklane_tasks_deduplicated", "Submits answered with the task holding their unique key."),
    "pruned": ("tasklane_tasks_pruned", "COMPLETED and CANCELLED tasks deleted after the retention period."),
    "purged": ("tasklane_dead_letters_purged", "Dead letters (FAILED tasks) deleted on purpose by a purge."),
}
# Batches (migration 0009), counted once per batch, not by task name: written by the
# statement that opens a batch and by the trigger that completes it.
BATCH_COUNTERS: dict[str, tuple[str, str]] = {
    "batches_opened": ("tasklane_batches_opened", "Batches opened by a batch submit."),
    "batches_completed": ("tasklane_batches_completed", "Batches whose tasks all became final (completion fired)."),
}
HISTOGRAMS: dict[str, tuple[str, str]] = {
    "queue_wait": ("tasklane_task_queue_wait_seconds", "Time from enqueued (or due) to claimed by a drainer."),
    "run": (
        "tasklane_task_run_seconds",
        "Time from claim to recorded outcome (an outcome waits up to a few ms for its batch's other tasks).",
    ),
}
PRIORITIES = [p.value for p in Priority]


class MetricsStore(Protocol):
    def metric_totals(self) -> list[MetricTotal]: ...
    def queue_gauges(self) -> list[QueueGauge]: ...
    def paused_gauges(self) -> list[PausedGauge]: ...


class MetricsQueue(Protocol):
    def snapshot(self) -> dict[str, float | None]: ...
    def tenant_depths(self, tenants: Iterable[str] | None = None) -> dict[str, tuple[int, int]]: ...
    def refusals(self) -> dict[tuple[str, str], int]: ...


class TasklaneCollector:
    """A custom collector: every scrape reads PostgreSQL and Redis afresh.  (Not a
    subclass of prometheus_client's ``Collector``: that would import the library with
    this module; ``CollectorRegistry.register`` needs only ``collect``.)

    PostgreSQL unreachable: the scrape fails (``UnavailableError``, a 503), since the
    counters cannot be read.  Redis unreachable: ``tasklane_redis_up`` is 0 and its
    gauges are left out; everything else is still reported."""

    def __init__(self, store: MetricsStore, queue: MetricsQueue) -> None:
        self.store = store
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        yield from counter_families(self.store.metric_totals())
        yield from gauge_families(self.store.queue_gauges())
        yield from paused_families(self.store.paused_gauges())
        yield from redis_families(self.queue)


def counter_families(rows: Iterable[MetricTotal]) -> Iterator[Metric]:
    """Counter and histogram families from the store's metric totals."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    counts: dict[str, dict[str, float]] = defaultdict(dict)  # metric -> name -> n
    buckets: dict[str, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    batch_counts = dict.fromkeys(BATCH_COUNTERS, 0.0)
    for r in rows:
        if r.metric in BATCH_COUNTERS:
            batch_counts[r.metric] += float(r.n)
        elif r.metric in COUNTERS:
            counts[r.metric][r.name] = counts[r.metric].get(r.name, 0) + float(r.n)
        elif r.metric in HISTOGRAMS:
            per_le = buckets[r.metric][r.name]
            per_le[r.le] = per_le.get(r.le, 0) + float(r.n)
            sums[r.metric][r.name] += float(r.total or 0)
    names = sorted({n for per in counts.values() for n in per} | {n for per in buckets.values() for n in per})
    for key, (prom, doc) in COUNTERS.items():
        family = CounterMetricFamily(prom, doc, labels=["task_name"])
        for name in names:
            family.add_metric([name], counts[key].get(name, 0.0))
        yield family
    for key, (prom, doc) in BATCH_COUNTERS.items():
        yield CounterMetricFamily(prom, doc, value=batch_counts[key])
    for key, (prom, doc) in HISTOGRAMS.items():
        hist = HistogramMetricFamily(prom, doc, labels=["task_name"])
        for name, per_le in sorted(buckets[key].items()):
            cumulative, running = [], 0.0
            for bound in (*BUCKETS, float("inf")):
                running += per_le.get(bound, 0.0)
                cumulative.append((_le(bound), running))
            # An observation above the last finite bound lands in +Inf; anything with
            # an unknown bound (never, if BUCKETS matches the trigger) is counted there too.
            extra = sum(v for le, v in per_le.items() if le not in BUCKETS and le != float("inf"))
            cumulative[-1] = ("+Inf", running + extra)
            hist.add_metric([name], cumulative, sum_value=sums[key][name])
        yield hist


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def gauge_families(rows: Iterable[QueueGauge]) -> Iterator[Metric]:
    """Queue gauges from the store's counts (PostgreSQL: the source of truth)."""
    from prometheus_client.core import GaugeMetricFamily

    by: dict[str, dict[str, float]] = {
        s: dict.fromkeys(PRIORITIES, 0.0) for s in ("QUEUED", "PENDING", "PROCESSING", "WAITING")
    }
    oldest = dict.fromkeys(PRIORITIES, 0.0)
    dead = open_batches = 0.0
    for r in rows:
        if r.status == "FAILED":
            dead += float(r.n)
        elif r.status == "BATCHES_OPEN":
            open_batches = float(r.n)
        elif r.status in by and r.priority is not None and r.priority in oldest:
            by[r.status][r.priority] = float(r.n)
            if r.status == "QUEUED" and r.oldest_age_seconds is not None:
                oldest[r.priority] = max(float(r.oldest_age_seconds), 0.0)
    for status, (prom, doc) in {
        "QUEUED": ("tasklane_ready_tasks", "Tasks ready to run (QUEUED) by priority."),
        "PENDING": ("tasklane_delayed_tasks", "Tasks waiting for their run_at or a retry (PENDING) by priority."),
        "PROCESSING": ("tasklane_in_flight_tasks", "Tasks a drainer holds under a lease (PROCESSING) by priority."),
        "WAITING": ("tasklane_waiting_tasks", "Tasks waiting for their parents to end (WAITING) by priority."),
    }.items():
        gauge = GaugeMetricFamily(prom, doc, labels=["priority"])
        for p in PRIORITIES:
            gauge.add_metric([p], by[status][p])
        yield gauge
    age = GaugeMetricFamily(
        "tasklane_oldest_ready_task_age_seconds",
        "Age of the oldest ready task by priority (0 when none).",
        labels=["priority"],
    )
    for p in PRIORITIES:
        age.add_metric([p], oldest[p])
    yield age
    yield GaugeMetricFamily("tasklane_dead_letter_tasks", "Tasks in the dead-letter queue (FAILED).", value=dead)
    yield GaugeMetricFamily(
        "tasklane_open_batches", "Batches with tasks not final yet (completion not fired).", value=open_batches
    )


def paused_families(rows: Iterable[PausedGauge]) -> Iterator[Metric]:
    """Paused task types (pause and resume: services/control.py) and the work they hold."""
    from prometheus_client.core import GaugeMetricFamily

    rows = list(rows)
    pauses = GaugeMetricFamily(
        "tasklane_paused_task_types",
        "Pauses in force by task type: scope global (0 or 1, every tenant) or tenant (how many tenants).",
        labels=["task_name", "scope"],
    )
    held = GaugeMetricFamily(
        "tasklane_paused_tasks", "QUEUED tasks a pause holds back, by task type.", labels=["task_name"]
    )
    for r in rows:
        pauses.add_metric([r.name, "global"], float(r.global_pauses))
        pauses.add_metric([r.name, "tenant"], float(r.tenant_pauses))
        held.add_metric([r.name], float(r.held))
    yield pauses
    yield held


def redis_families(queue: MetricsQueue) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    try:
        snap = queue.snapshot()
    except QueueError as exc:
        logger.warning("metrics: Redis unreachable", extra={"error": exc.message})
        yield GaugeMetricFamily("tasklane_redis_up", "1 when Redis answered this scrape.", value=0)
        return
    yield GaugeMetricFamily("tasklane_redis_up", "1 when Redis answered this scrape.", value=1)
    members = GaugeMetricFamily(
        "tasklane_redis_queue_members",
        "Ids in the Redis structures (ready, delayed, leases); rebuilt from PostgreSQL when lost.",
        labels=["structure"],
    )
    for structure, key in (("ready", "ready"), ("delayed", "delayed"), ("leases", "leased")):
        members.add_metric([structure], float(snap[key] or 0))
    yield members
    if snap["last_sweep"] is not None:
        yield GaugeMetricFamily(
            "tasklane_last_sweep_timestamp_seconds", "When a sweep last finished (Unix time).", value=snap["last_sweep"]
        )
    yield from tenant_families(queue)


def tenant_families(queue: MetricsQueue) -> Iterator[Metric]:
    """Fair share as the claim script sees it: each waiting tenant's ready tasks and
    running slots (tenants with max_running), and submits refused by a quota."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    try:
        depths, refused = queue.tenant_depths(), queue.refusals()
    except QueueError as exc:
        logger.warning("metrics: tenant gauges skipped", extra={"error": exc.message})
        return
    ready = GaugeMetricFamily(
        "tasklane_tenant_ready_tasks", "Ready tasks waiting in each tenant's own set (fair share).", labels=["tenant"]
    )
    running = GaugeMetricFamily(
        "tasklane_tenant_running_slots",
        "Running slots taken, for tenants with a max_running quota.",
        labels=["tenant"],
    )
    for tenant, (r, n) in sorted(depths.items()):
        ready.add_metric([tenant], float(r))
        if n:
            running.add_metric([tenant], float(n))
    refusals = CounterMetricFamily(
        "tasklane_tenant_quota_refused",
        "Tasks refused at submit by a tenant quota (429); kept in Redis.",
        labels=["tenant", "quota"],
    )
    for (quota, tenant), n in sorted(refused.items()):
        refusals.add_metric([tenant, quota], float(n))
    yield from (ready, running, refusals)


def render(store: MetricsStore, queue: MetricsQueue) -> str:
    """The exposition text for one scrape."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(TasklaneCollector(store, queue))
    return generate_latest(registry).decode()


class FoldingStore(Protocol):
    def fold_metric_deltas(self) -> bool: ...


def fold(store: FoldingStore) -> None:
    """Fold the trigger's deltas into totals (the sweeper calls this); never raises."""
    try:
        store.fold_metric_deltas()
    except UnavailableError as exc:
        logger.warning("metrics fold skipped", extra={"error": exc.message})


# --- event log lines ---------------------------------------------------------------------


def _debug() -> bool:
    return bool(logger.log_level <= logging.DEBUG)


def _short(text: str | None) -> str | None:
    return None if text is None else text[:200]


def _counts(names: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for n in names:
        out[n] += 1
    return dict(out)


def log_submitted(tenant: str, tasks: Sequence[Task], *, actor: str, duplicates: int = 0) -> None:
    """One line per submit call, INFO for a call of several tasks (a batch, a workflow)
    and DEBUG for a single submit; one DEBUG line per task.

    A single submit's line is a per-task line, and per-task lines are DEBUG (README,
    "Logs"): at INFO, Powertools' JSON line was ~300k instructions of an API request's
    ~1.6M (bench/RESULTS.md, round 8).  Every task is recorded all the same, by its
    audit trail and the ``submitted`` counter."""
    calls = len(tasks) + duplicates
    if not calls:
        return
    several = calls > 1
    if logger.log_level > (logging.INFO if several else logging.DEBUG):
        return
    if _debug():
        for t in tasks:
            logger.debug(
                "task submitted",
                extra={
                    "event": "submit",
                    "task_id": t.id,
                    "task_name": t.name,
                    "tenant": t.tenant,
                    "priority": t.priority.value,
                    "status": t.status.value,
                    "attempt": t.attempts,
                },
            )
    (logger.info if several else logger.debug)(
        "tasks submitted",
        extra={
            "event": "submit",
            "tenant": tenant,
            "actor": actor,
            "count": len(tasks),
            "duplicates": duplicates,  # idempotency keys seen before (replays or conflicts)
            "task_names": _counts(t.name for t in tasks),
            "task_ids": [t.id for t in tasks[:20]],
        },
    )


def log_claimed(worker: str, claimed: Sequence[Claimed]) -> None:
    """DEBUG per claimed task, with how long it waited in the queue."""
    if not _debug():
        return
    for t in claimed:
        wait = t.wait_seconds
        logger.debug(
            "task claimed",
            extra={
                "event": "claim",
                "task_id": t.id,
                "task_name": t.name,
                "tenant": t.tenant,
                "attempt": t.attempts,
                "wait_ms": round(wait * 1000, 1) if wait is not None else None,
                "worker": worker,
            },
        )


_OUTCOMES = {
    Status.COMPLETED: "completed",
    Status.PENDING: "retry",
    Status.FAILED: "dead_letter",
    Status.CANCELLED: "cancelled",
}
# The kinds a batch's outcomes are counted by, in its lines' order (``batchlog`` too).
OUTCOME_KINDS = tuple(_OUTCOMES.values())


def log_finished(
    worker: str, outcomes: Sequence[Outcome], recorded: Sequence[Recorded], duration_seconds: float
) -> dict[str, int]:
    """Per task: DEBUG for completions and retries, WARNING for dead letters; then one
    DEBUG line for the batch (the INFO line sums batches: ``batchlog``).  ``duration_ms``
    is claim → outcome recorded.  Returns the recorded outcomes counted by kind
    (``completed``, ``retry``, ``dead_letter``, ``cancelled``).

    Only ``recorded``, the transitions the fenced finish applied, are logged: an outcome
    turned away is counted as ``lease_lost``.  A redriven task that fails again is
    dead-lettered again, ``attempt`` counting from 1 again: ``redrives`` tells the runs
    apart (migration 0031)."""
    by_id: dict[str, Outcome] | None = None
    duration_ms = round(duration_seconds * 1000, 1)
    tally: dict[str, int] = defaultdict(int)
    debug = _debug()
    for r in recorded:
        task_id = r.id
        status = r.status
        outcome = _OUTCOMES.get(status) or status.value.lower()
        tally[outcome] += 1
        if outcome != "dead_letter" and not debug:
            continue  # nothing to log for this task (the common case: keep it cheap)
        by_id = by_id if by_id is not None else {o.id: o for o in outcomes}
        o = by_id.get(task_id)
        fields: dict[str, Any] = {
            "event": "finish" if outcome in ("completed", "cancelled") else outcome,
            "outcome": outcome,
            "task_id": task_id,
            "task_name": r.name,
            "tenant": r.tenant,
            "attempt": r.attempts,
            "redrives": r.redrives,
            "duration_ms": duration_ms,
            "worker": worker,
        }
        if o is not None and o.error is not None:
            fields["error_type"] = o.error_type
            fields["error"] = _short(o.error)
        if outcome == "dead_letter":
            logger.warning("task dead-lettered", extra=fields)
        elif debug:
            if outcome == "retry" and o is not None and o.delay_seconds is not None:
                fields["retry_in_seconds"] = round(o.delay_seconds, 3)
            logger.debug(f"task {outcome}", extra=fields)
    lost = len(outcomes) - len(recorded)
    if debug and (recorded or lost):
        logger.debug(
            "batch finished",
            extra={
                "event": "batch",
                "worker": worker,
                "count": len(outcomes),
                "duration_ms": duration_ms,
                "lease_lost": lost,
                **{k: tally.get(k, 0) for k in OUTCOME_KINDS},
            },
        )
    return tally


def log_rescued(rows: Sequence[Recorded]) -> None:
    """Expired leases the sweeper counted as failed attempts (the rows its fenced finish
    changed; ``redrives`` as in ``log_finished``)."""
    if not rows:
        return
    for r in rows:
        fields = {
            "event": "rescue",
            "task_id": r.id,
            "task_name": r.name,
            "tenant": r.tenant,
            "attempt": r.attempts,
            "redrives": r.redrives,
            "outcome": "dead_letter" if r.status is Status.FAILED else "retry",
            "error_type": "LeaseLostError",
        }
        if r.status is Status.FAILED:
            logger.warning("task dead-lettered after its lease expired", extra=fields)
        elif _debug():
            logger.debug("task rescued for a retry", extra=fields)
    logger.info(
        "rescued expired leases",
        extra={
            "event": "rescue",
            "count": len(rows),
            "dead_lettered": sum(1 for r in rows if r.status is Status.FAILED),
            "task_ids": [r.id for r in rows[:20]],
        },
    )


def log_cancelled(tenant: str, task: Task, before: Status) -> None:
    logger.info(
        "task cancelled" if task.status is Status.CANCELLED else "task cancel requested",
        extra={
            "event": "cancel",
            "task_id": task.id,
            "task_name": task.name,
            "tenant": tenant,
            "attempt": task.attempts,
            "from_status": before.value,
            "outcome": task.status.value,
        },
    )


def log_redriven(tenant: str, tasks: Sequence[Task]) -> None:
    if tasks:
        logger.info(
            "dead letters redriven",
            extra={
                "event": "redrive",
                "tenant": tenant,
                "count": len(tasks),
                "task_names": _counts(t.name for t in tasks),
                "task_ids": [t.id for t in tasks[:20]],
            },
        )


def log_pruned(count: int, retention_days: float) -> None:
    """The sweeper's prune: one INFO line whenever it deleted something."""
    if count:
        logger.info(
            "pruned finished tasks",
            extra={"event": "prune", "count": count, "retention_days": retention_days},
        )


def log_purged(tenant: str, actor: str, purged: Purged) -> None:
    """A purge deletes dead letters for good: one WARNING line, whoever asked."""
    if purged.ids:
        logger.warning(
            "dead letters purged",
            extra={
                "event": "purge",
                "tenant": tenant,
                "actor": actor,
                "count": len(purged.ids),
                "more": purged.more,
                "task_ids": purged.ids[:20],
            },
        )


def log_pause(pause: Pause, *, paused: bool, actor: str, moved: int) -> None:
    """A pause or resume that changed something: one INFO line (the audit log has it too)."""
    logger.info(
        "task type paused" if paused else "task type resumed",
        extra={
            "event": "pause" if paused else "resume",
            "task_name": pause.name,
            "tenant": pause.tenant or "*",
            "scope": pause.scope,
            "actor": actor,
            "count": moved,  # ids taken out of Redis by the pause, or pushed back by the resume
        },
    )
