"""Submit use case: persist tasks first, then tell Redis.

A task is accepted only after its row is committed.  The push to Redis comes
afterwards and may fail (Redis down, a timeout): the row is QUEUED all the same
and the sweeper's reconciliation pushes it later, so an accepted task is never
lost; it may only start later than usual.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from chalicelib.adapters.postgres.store import dumps
from chalicelib.container import Container
from chalicelib.core.batches import BatchRecord, BatchSpec, NewBatch
from chalicelib.core.errors import ConflictError, QueueError, ValidationError
from chalicelib.core.model import NewTask, QueueEntry, Status, Task
from chalicelib.core.requests import TaskRequest
from chalicelib.core.tracecontext import TraceContext, new_root
from chalicelib.observability import metrics
from chalicelib.observability.log import logger


@dataclass(frozen=True)
class Submitted:
    """One submission's outcome: the task, and whether an earlier one was replayed."""

    task: Task
    replayed: bool = False


@dataclass(frozen=True)
class BatchItem:
    """One slot of a batch, in request order: accepted (``submitted``) or refused
    (``error``: the item's ``ValidationError``, or a ``ConflictError`` when its
    idempotency key was used for a different request)."""

    index: int
    submitted: Submitted | None = None
    error: ValidationError | ConflictError | None = None


@dataclass(frozen=True)
class BatchResult:
    items: list[BatchItem]
    batch: BatchRecord | None = None  # the batch opened, when one was asked for and a task created

    @property
    def created(self) -> int:
        """New tasks (replays of an earlier submission are not counted)."""
        return sum(1 for i in self.items if i.submitted is not None and not i.submitted.replayed)

    @property
    def failed(self) -> int:
        return sum(1 for i in self.items if i.error is not None)

    @property
    def all_created(self) -> bool:
        """Every item became a new task: nothing refused, nothing replayed."""
        return self.failed == 0 and self.created == len(self.items)


def submit(
    rt: Container, tenant: str, request: TaskRequest, *, actor: str = "api", trace: TraceContext | None = None
) -> Submitted:
    """Persist and enqueue one task (see ``submit_many``) under ``trace`` (the request's
    trace context; None: a fresh root)."""
    result = submit_many(rt, tenant, [request], actor=actor, traces=None if trace is None else [trace])[0]
    if isinstance(result, ConflictError):
        raise result
    return result


def submit_many(
    rt: Container,
    tenant: str,
    requests: Sequence[TaskRequest],
    *,
    actor: str = "api",
    traces: Sequence[TraceContext] | None = None,
) -> list[Submitted | ConflictError]:
    """Persist N tasks with one INSERT and enqueue them with one Redis round trip.

    Results are in request order.  An idempotency key seen before yields the
    original task (``replayed``) when the request is the same, else a
    ``ConflictError`` in that slot.  ``traces`` gives each task its trace context;
    without it each task starts a trace of its own (one task, one trace).
    """
    return _submit(rt, tenant, requests, actor=actor, traces=traces)[0]


def _submit(
    rt: Container,
    tenant: str,
    requests: Sequence[TaskRequest],
    *,
    actor: str,
    traces: Sequence[TraceContext] | None = None,
    batch: NewBatch | None = None,
) -> tuple[list[Submitted | ConflictError], BatchRecord | None]:
    """``submit_many``, opening ``batch`` with the tasks it creates when given."""
    new = _new_tasks(tenant, requests, traces, batch.id if batch else None)
    opened = None
    if batch is None:
        inserted = {t.id: t for t in rt.store.insert_tasks(new, actor=actor)}
    else:
        rows, opened = rt.store.insert_batch_tasks(new, batch, actor=actor)
        inserted = {t.id: t for t in rows}
    _enqueue(rt, list(inserted.values()))

    missing_keys = [n.idempotency_key for n in new if n.id not in inserted and n.idempotency_key]
    existing = rt.store.tasks_by_idempotency_keys(tenant, missing_keys) if missing_keys else {}
    results: list[Submitted | ConflictError] = []
    for n in new:
        if n.id in inserted:
            results.append(Submitted(inserted[n.id]))
            continue
        found = existing.get(n.idempotency_key or "")
        if found is None:
            # Inserted by a concurrent request and already forgotten: vanishingly
            # rare, but the client must not believe the task was accepted.
            results.append(ConflictError(f"idempotency key {n.idempotency_key!r} is being reused; retry"))
        elif found.request_hash != n.request_hash:
            results.append(
                ConflictError(
                    f"idempotency key {n.idempotency_key!r} was already used with a different request",
                    details={"task_id": found.task.id},
                )
            )
        else:
            results.append(Submitted(found.task, replayed=True))
    metrics.log_submitted(tenant, list(inserted.values()), actor=actor, duplicates=len(new) - len(inserted))
    return results, opened


def _new_tasks(
    tenant: str, requests: Sequence[TaskRequest], traces: Sequence[TraceContext] | None, batch_id: str | None
) -> list[NewTask]:
    """The rows to insert; without ``traces`` each task starts a trace of its own."""
    if traces is None:
        traces = [new_root() for _ in requests]
    return [
        NewTask(
            id=str(uuid.uuid4()),
            tenant=tenant,
            name=r.name,
            priority=r.priority.value,
            payload_json=dumps(r.payload),
            max_retries=r.max_retries,
            timeout_seconds=r.timeout_seconds,
            run_at=r.run_at,
            delay_seconds=r.delay_seconds,
            idempotency_key=r.idempotency_key,
            request_hash=r.fingerprint() if r.idempotency_key else None,
            callback_url=r.callback_url,
            trace_context=t.header(),
            batch_id=batch_id,
        )
        for r, t in zip(requests, traces, strict=True)
    ]


def _enqueue(rt: Container, tasks: Sequence[Task]) -> None:
    entries = [QueueEntry.of(t) for t in tasks if t.status in (Status.QUEUED, Status.PENDING)]
    try:
        rt.queue.push(entries)
    except QueueError as exc:
        logger.warning(
            "tasks persisted but not pushed to Redis; the sweeper will enqueue them",
            extra={"count": len(tasks), "error": str(exc)},
        )


def submit_batch(
    rt: Container,
    tenant: str,
    items: Sequence[TaskRequest | ValidationError],
    *,
    actor: str = "api",
    spec: BatchSpec | None = None,
) -> BatchResult:
    """Submit the valid items of a batch together (``submit_many``); the invalid ones
    (already refused by validation) keep their error in their slot.  With ``spec``
    the tasks created open a batch (none when no task was created)."""
    valid = [(i, item) for i, item in enumerate(items) if isinstance(item, TaskRequest)]
    outcomes: list[Submitted | ConflictError] = []
    opened = None
    if valid:
        batch = _new_batch(rt, tenant, spec) if spec is not None else None
        outcomes, opened = _submit(rt, tenant, [r for _, r in valid], actor=actor, batch=batch)
    slots = [BatchItem(i, error=item) for i, item in enumerate(items) if isinstance(item, ValidationError)]
    for (i, _), out in zip(valid, outcomes, strict=True):
        slots.append(BatchItem(i, error=out) if isinstance(out, ConflictError) else BatchItem(i, submitted=out))
    return BatchResult(sorted(slots, key=lambda s: s.index), opened)


def _new_batch(rt: Container, tenant: str, spec: BatchSpec) -> NewBatch:
    return NewBatch(
        id=str(uuid.uuid4()),
        tenant=tenant,
        callback_url=spec.callback_url,
        on_complete_json=spec.on_complete_json(),
        callback_max_retries=rt.settings.webhook_max_retries,
        callback_timeout_seconds=rt.settings.webhook_timeout_seconds,
        # The completion (webhook, follow-up) is a trace of its own.
        trace_context=new_root().header(),
    )
