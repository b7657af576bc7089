"""Core task types: statuses, priorities, the task record, and what the services hand
the store (``NewTask``, ``Outcome``) or get back for a claimed attempt (``Claimed``).
No I/O here."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from chalicelib.core.tracecontext import stored


class Status(StrEnum):
    """A task's state; mirrors the CHECK constraint on ``tasks.status``."""

    WAITING = "WAITING"  # submit with parents (depends_on, a workflow step): until they end
    PENDING = "PENDING"  # submit (run_at in the future) or drain/sweep (waiting for a retry)
    QUEUED = "QUEUED"  # submit, sweep (promotion of a due task) or redrive
    PROCESSING = "PROCESSING"  # drain, when it claims the task under a lease
    COMPLETED = "COMPLETED"  # drain, when the executor returned
    FAILED = "FAILED"  # drain or sweep: retries exhausted or a permanent error (dead letter)
    CANCELLED = "CANCELLED"  # the API's cancel, or drain honouring a cancel request

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

# Every transition the store performs; each one is a guarded UPDATE on the source state.
TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.WAITING, Status.QUEUED),  # its last parent completed (the settling trigger, 0008)
        (Status.WAITING, Status.PENDING),  # the same, with run_at still ahead
        (Status.WAITING, Status.CANCELLED),  # a parent failed or was cancelled, or the API's cancel
        (Status.PENDING, Status.QUEUED),
        (Status.PENDING, Status.PROCESSING),  # a due retry claimed before the sweeper promoted it
        (Status.PENDING, Status.CANCELLED),
        (Status.QUEUED, Status.PROCESSING),
        (Status.QUEUED, Status.CANCELLED),
        (Status.PROCESSING, Status.COMPLETED),
        (Status.PROCESSING, Status.PENDING),
        (Status.PROCESSING, Status.FAILED),
        (Status.PROCESSING, Status.CANCELLED),
        (Status.FAILED, Status.QUEUED),
    }
)


@dataclass(slots=True)
class NewTask:
    """A validated task ready to insert (``Store.insert_tasks``).

    Not frozen, though nothing changes one once ``submit._new_tasks`` has built it: a
    frozen dataclass's ``__init__`` sets each of these 23 fields through
    ``object.__setattr__``, ~3 of the ~10 µs a single submit's rows took (issue 14
    round 10); a plain slots ``__init__`` stores them directly."""

    id: str
    tenant: str
    name: str
    priority: str
    payload_json: str
    max_retries: int
    timeout_seconds: int
    run_at: datetime | None = None
    delay_seconds: float | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    callback_url: str | None = None
    trace_context: str | None = None  # X-Amzn-Trace-Id form (core.tracecontext)
    batch_id: str | None = None  # the batch it opens with (core.batches)
    unique_key: str | None = None
    unique_for_seconds: float | None = None  # None: the key is held while the task is active
    expires_at: datetime | None = None
    # Dependencies (core.dependencies): open parents, run when a parent failed, and
    # the parent that had already failed at submit (the task is CANCELLED at once).
    waiting_on: int | None = None
    run_anyway: bool | None = None
    has_followers: bool = False
    cancelled_by: str | None = None
    # The payload itself, for the task the submit answers with (``Accepted.task``);
    # None: decoded from ``payload_json``.
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the drainer or the sweeper records it (``Store.finish``)."""

    id: str
    token: str
    status: Status  # COMPLETED, PENDING (retry), FAILED or CANCELLED
    result_json: str | None = None
    error: str | None = None
    error_type: str | None = None
    delay_seconds: float | None = None
    snooze: bool = False  # PENDING after a snooze: the attempt is given back (not a failure)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A task the drainer holds under a lease: one row of the ``claim`` query
    (``Store.claim`` builds it; the columns are listed there)."""

    id: str
    tenant: str
    name: str
    priority: str
    payload: Any
    attempts: int
    max_retries: int
    timeout_seconds: float
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    trace_context: str | None = None  # the task's trace, as submit stored it
    snoozes: int = 0  # how often it snoozed so far (the retry policy bounds it)
    has_parents: bool = False  # its parents' results are loaded for it (core.dependencies)
    parent_results: Mapping[str, Any] | None = None  # parent key -> result, once loaded

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Claimed:
        return cls(
            row["id"],
            row["tenant"],
            row["name"],
            row["priority"],
            row["payload"],
            row["attempts"],
            row["max_retries"],
            row["timeout_seconds"],
            row["enqueued_at"],
            row["started_at"],
            row.get("trace_context"),
            row.get("snoozes", 0),
            bool(row.get("has_parents")),
        )

    @property
    def wait_seconds(self) -> float | None:
        """How long the task waited between ready and claimed (None when unknown)."""
        if self.started_at is None or self.enqueued_at is None:
            return None
        return (self.started_at - self.enqueued_at).total_seconds()


class Priority(StrEnum):
    """Served strictly in this order, with aging so ``low`` cannot starve."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical .. 3 for low."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
# Lookups for the bulk submit's per-task hot path (an Enum call is ~10x a dict lookup).
_STATUS_OF = {s.value: s for s in Status}
_PRIORITY_OF = {p.value: p for p in Priority}


@dataclass(frozen=True)
class Task:
    """One row of ``tasks``."""

    id: str
    tenant: str
    name: str
    status: Status
    priority: Priority
    payload: Any
    result: Any
    attempts: int
    max_retries: int
    timeout_seconds: int
    run_at: datetime
    last_error: str | None
    last_error_type: str | None
    cancel_requested: bool
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    callback_url: str | None = None
    schedule_id: str | None = None
    progress: int | None = None
    progress_message: str | None = None
    trace_context: str | None = None  # X-Amzn-Trace-Id form: the task's one trace
    has_followers: bool = False  # a trigger reacts to its end (dependents, a batch)
    batch_id: str | None = None
    unique_key: str | None = None
    unique_until: datetime | None = None  # end of the key's window; None: held while active
    expires_at: datetime | None = None  # no attempt starts after this
    snoozes: int = 0
    waiting_on: int | None = None  # parents not ended yet; None: the task has no parents
    run_anyway: bool | None = None  # runs when a parent fails (None: no parents)

    @property
    def trace_id(self) -> str | None:
        """The X-Ray trace id (``1-...``) every span and log line of this task carries."""
        trace = stored(self.trace_context)
        return trace.trace_id if trace is not None else None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Task:
        return cls(
            id=str(row["id"]),
            tenant=row["tenant"],
            name=row["name"],
            status=Status(row["status"]),
            priority=Priority(row["priority"]),
            payload=row["payload"],
            result=row["result"],
            attempts=row["attempts"],
            max_retries=row["max_retries"],
            timeout_seconds=row["timeout_seconds"],
            run_at=row["run_at"],
            last_error=row["last_error"],
            last_error_type=row["last_error_type"],
            cancel_requested=row["cancel_requested"],
            idempotency_key=row["idempotency_key"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            enqueued_at=row["enqueued_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            callback_url=row.get("callback_url"),
            schedule_id=str(row["schedule_id"]) if row.get("schedule_id") else None,
            progress=row.get("progress"),
            progress_message=row.get("progress_message"),
            trace_context=row.get("trace_context"),
            has_followers=row.get("has_followers", False),
            batch_id=str(row["batch_id"]) if row.get("batch_id") else None,
            unique_key=row.get("unique_key"),
            unique_until=row.get("unique_until"),
            expires_at=row.get("expires_at"),
            snoozes=row.get("snoozes") or 0,
            waiting_on=row.get("waiting_on"),
            run_anyway=row.get("run_anyway"),
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the submit statement (``insert_tasks``) decided for a task it inserted.  The
    caller built everything else (``NewTask``), so only these columns come back."""

    id: str
    status: Status
    run_at: datetime
    enqueued_at: datetime | None
    created_at: datetime
    unique_until: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Accepted:
        status = _STATUS_OF[row["status"]]
        return cls(row["id"], status, row["run_at"], row["enqueued_at"], row["created_at"], row["unique_until"])

    def task(self, new: NewTask) -> Task:
        """The row as ``RETURNING *`` would have read it (a new task: no attempt yet)."""
        return _new_task(new, self.status, self.run_at, self.enqueued_at, self.created_at, self.unique_until)

    @staticmethod
    def queued_now(new: NewTask, created_at: datetime) -> Task:
        """The task of ``insert_task_now`` (due at once, no unique key): QUEUED, with
        run_at and enqueued_at its creation's ``now()``; no ``Accepted`` in between."""
        return _new_task(new, Status.QUEUED, created_at, created_at, created_at, None)


def _new_task(
    new: NewTask,
    status: Status,
    run_at: datetime,
    enqueued_at: datetime | None,
    created_at: datetime,
    unique_until: datetime | None,
) -> Task:
    """``Accepted.task``: the inserted row from what was sent and what the INSERT decided."""
    return _filled(
        Task,
        {
            "id": new.id,
            "tenant": new.tenant,
            "name": new.name,
            "status": status,
            "priority": _PRIORITY_OF[new.priority],
            "payload": new.payload if new.payload is not None else json.loads(new.payload_json),
            "result": None,
            "attempts": 0,
            "max_retries": new.max_retries,
            "timeout_seconds": new.timeout_seconds,
            "run_at": run_at,
            "last_error": None,
            "last_error_type": None,
            "cancel_requested": False,
            "idempotency_key": new.idempotency_key,
            "created_at": created_at,
            "updated_at": created_at,
            "enqueued_at": enqueued_at,
            "started_at": None,
            "finished_at": None,
            "callback_url": new.callback_url,
            "schedule_id": None,
            "progress": None,
            "progress_message": None,
            "trace_context": new.trace_context,
            "has_followers": new.batch_id is not None,
            "batch_id": new.batch_id,
            "unique_key": new.unique_key,
            "unique_until": unique_until,
            "expires_at": new.expires_at,
            "snoozes": 0,
            "waiting_on": None,
            "run_anyway": None,
        },
    )


def _filled(cls: type[Task], fields: dict[str, Any]) -> Task:
    """A ``cls`` holding ``fields`` (every one of its fields), built without its
    ``__init__``.  A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``: for ``Task``'s 33 that is ~9 microseconds, a third of a bulk
    submit's client CPU per task; filling the instance's ``__dict__`` is one C call.
    The result is the same object (``==``, ``repr``, ``replace``): ``Task`` has no
    ``__post_init__`` and no slots.  No check here that ``fields`` is complete (it
    would cost a sixth of what is saved): tests/unit/test_accepted_task.py holds
    ``Accepted.task`` to ``Task``'s fields."""
    task = object.__new__(cls)
    task.__dict__.update(fields)
    return task


# --- the Redis queue's view of a task -----------------------------------------------
# (Kept apart from the PostgreSQL records above: this is all Redis ever holds.)

WEBHOOK_TASK = "tasklane.webhook"  # the internal task type that delivers completion webhooks


def head_start_ms(priority: Priority, aging_seconds: float) -> float:
    """How far ahead of ``low`` a priority level starts in the ready set (ms)."""
    return float((3 - priority.rank) * aging_seconds * 1000)


def ready_score(at_ms: float, priority: Priority, aging_seconds: float) -> float:
    """Score of a task in a ready sorted set (lowest is served first): the one aging rule.

    Each priority level gets a head start of ``aging_seconds`` over the next one:
    within that bound the order is strict (critical > high > normal > low, FIFO
    inside a level); a task that has waited longer than the bound overtakes newer
    work of the level above, so nothing starves.  One ZPOPMIN serves all of it.
    The claim script applies the same rule to due delayed ids with head starts
    computed here (``head_start_ms``); a property test holds the two equal.
    """
    return float(at_ms - head_start_ms(priority, aging_seconds))


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One task id as the Redis queue holds it.

    ``tenant`` picks the tenant's ready set (fair share between tenants is decided at
    claim time).  ``at_ms`` is when the task became ready (enqueue time, epoch ms)
    or, for a ``delayed`` entry, when it becomes due.  ``name`` (the task type) routes
    task types with their own limits to their own ready sets.  Build entries with
    the constructors below, never by hand.
    """

    id: str
    tenant: str
    priority: Priority
    at_ms: float
    name: str | None = None
    delayed: bool = False

    @classmethod
    def of(cls, task: Task) -> QueueEntry:
        """Where ``task`` sits (or sat) in the queue: delayed until ``run_at`` when
        PENDING, otherwise ready since ``enqueued_at`` (``run_at`` when never queued)."""
        if task.status is Status.PENDING:
            return cls(task.id, task.tenant, task.priority, task.run_at.timestamp() * 1000, task.name, delayed=True)
        at = task.enqueued_at or task.run_at
        return cls(task.id, task.tenant, task.priority, at.timestamp() * 1000, task.name)

    @classmethod
    def of_submitted(cls, tasks: Iterable[Task]) -> list[QueueEntry]:
        """The entries of the just-submitted ``tasks`` the queue holds: the QUEUED and
        PENDING ones (a WAITING task is pushed when its parents finish)."""
        return [cls.of(t) for t in tasks if t.status is Status.QUEUED or t.status is Status.PENDING]

    @classmethod
    def ready(cls, task_id: str, tenant: str, priority: Priority, enqueued_ms: float, name: str | None) -> QueueEntry:
        """A ready entry from a store record (a QUEUED task)."""
        return cls(task_id, tenant, priority, enqueued_ms, name)

    @classmethod
    def due_at(cls, task_id: str, tenant: str, priority: Priority, due_ms: float, name: str | None) -> QueueEntry:
        """A delayed entry from a store record (a retry or a scheduled task)."""
        return cls(task_id, tenant, priority, due_ms, name, delayed=True)

    @classmethod
    def webhook(cls, hook_id: str, tenant: str, enqueued_ms: float) -> QueueEntry:
        """The ready entry of a completion-webhook delivery task (the tenant's own work)."""
        return cls(hook_id, tenant, Priority.HIGH, enqueued_ms, WEBHOOK_TASK)
