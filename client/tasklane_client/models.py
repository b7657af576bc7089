"""Typed views of what the API returns (frozen dataclasses).

Every model keeps the JSON it was built from in ``raw`` so fields added to the API
later are reachable before this client names them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TaskStatus(StrEnum):
    """Where a task is in its lifecycle."""

    WAITING = "WAITING"  # for its parents (depends_on, a workflow step) to end
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED (FAILED may still be redriven)."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class Priority(StrEnum):
    """Served strictly critical > high > normal > low, with aging."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


def parse_datetime(value: Any) -> datetime | None:
    """An ISO-8601 string from the API (``Z`` accepted), or None."""
    if value is None:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _required_datetime(value: Any) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError("expected a timestamp, got null")
    return parsed


@dataclass(frozen=True)
class AttemptError:
    """The error of one failed attempt (``Task.errors``)."""

    attempt: int
    error: str
    error_type: str | None
    at: datetime | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttemptError:
        return cls(
            attempt=int(data["attempt"]),
            error=str(data.get("error") or ""),
            error_type=data.get("error_type"),
            at=parse_datetime(data.get("at")),
        )


@dataclass(frozen=True)
class Task:
    """A task as the API shows it.

    ``errors`` is filled by :meth:`Client.get` (and :meth:`Client.wait`), empty in
    listings.  ``replayed`` is True when a submit returned the task an earlier request
    with the same idempotency key created.
    """

    id: str
    name: str
    status: TaskStatus
    priority: str
    payload: Any
    result: Any
    attempts: int
    max_retries: int
    timeout_seconds: int
    run_at: datetime | None
    last_error: str | None
    last_error_type: str | None
    cancel_requested: bool
    idempotency_key: str | None
    created_at: datetime | None
    updated_at: datetime | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    callback_url: str | None
    schedule_id: str | None
    progress: float | None
    progress_message: str | None
    trace_id: str | None = None  # the task's X-Ray trace id (submit, attempts and webhook)
    batch_id: str | None = None  # the batch it was submitted in (submit_many with batch=)
    unique_key: str | None = None
    unique_until: datetime | None = None  # the key's window; None with a key: held while active
    expires_at: datetime | None = None  # no attempt starts after it
    snoozes: int = 0  # how often the task type snoozed it (no attempt spent)
    waiting_on: int | None = None  # parents not ended yet (None: the task has no parents)
    depends_on: list[str] = field(default_factory=list)  # its parents (filled by get)
    dependents: list[str] = field(default_factory=list)  # tasks waiting for it (filled by get)
    errors: list[AttemptError] = field(default_factory=list)
    replayed: bool = False
    duplicate: bool = False  # the task holding the submit's unique key (nothing was created)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_final(self) -> bool:
        """True once the task is COMPLETED, FAILED or CANCELLED."""
        return self.status.is_final

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, replayed: bool = False, duplicate: bool = False) -> Task:
        progress = data.get("progress")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            status=TaskStatus(data["status"]),
            priority=str(data.get("priority", "normal")),
            payload=data.get("payload"),
            result=data.get("result"),
            attempts=int(data.get("attempts") or 0),
            max_retries=int(data.get("max_retries") or 0),
            timeout_seconds=int(data.get("timeout_seconds") or 0),
            run_at=parse_datetime(data.get("run_at")),
            last_error=data.get("last_error"),
            last_error_type=data.get("last_error_type"),
            cancel_requested=bool(data.get("cancel_requested", False)),
            idempotency_key=data.get("idempotency_key"),
            created_at=parse_datetime(data.get("created_at")),
            updated_at=parse_datetime(data.get("updated_at")),
            enqueued_at=parse_datetime(data.get("enqueued_at")),
            started_at=parse_datetime(data.get("started_at")),
            finished_at=parse_datetime(data.get("finished_at")),
            callback_url=data.get("callback_url"),
            schedule_id=data.get("schedule_id"),
            progress=float(progress) if progress is not None else None,
            progress_message=data.get("progress_message"),
            trace_id=data.get("trace_id"),
            batch_id=data.get("batch_id"),
            unique_key=data.get("unique_key"),
            unique_until=parse_datetime(data.get("unique_until")),
            expires_at=parse_datetime(data.get("expires_at")),
            snoozes=int(data.get("snoozes") or 0),
            waiting_on=data.get("waiting_on"),
            depends_on=[str(i) for i in data.get("depends_on") or []],
            dependents=[str(i) for i in data.get("dependents") or []],
            errors=[AttemptError.from_dict(e) for e in data.get("errors") or []],
            replayed=replayed,
            duplicate=duplicate,
            raw=dict(data),
        )


@dataclass(frozen=True)
class TaskEvent:
    """One transition of a task's audit trail."""

    at: datetime | None
    from_status: str | None
    to_status: str
    attempt: int | None
    actor: str | None
    error: str | None
    error_type: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskEvent:
        return cls(
            at=parse_datetime(data.get("at")),
            from_status=data.get("from_status"),
            to_status=str(data["to_status"]),
            attempt=data.get("attempt"),
            actor=data.get("actor"),
            error=data.get("error"),
            error_type=data.get("error_type"),
        )


@dataclass(frozen=True)
class NewTask:
    """A task to submit in :meth:`Client.submit_many` (a plain mapping works too)."""

    name: str
    payload: Any = None
    priority: str | Priority | None = None
    run_at: datetime | str | None = None
    delay_seconds: float | None = None
    max_retries: int | None = None
    timeout_seconds: int | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    unique_key: str | None = None
    unique_for_seconds: float | None = None
    expires_at: datetime | str | None = None
    depends_on: Sequence[str] | None = None
    on_dependency_failure: str | None = None  # "cancel" (the default) or "run"

    def to_body(self) -> dict[str, Any]:
        """The JSON body; fields left as None are omitted (the API rejects nulls)."""
        return task_body(
            self.name,
            self.payload,
            priority=self.priority,
            run_at=self.run_at,
            delay_seconds=self.delay_seconds,
            max_retries=self.max_retries,
            timeout_seconds=self.timeout_seconds,
            idempotency_key=self.idempotency_key,
            callback_url=self.callback_url,
            unique_key=self.unique_key,
            unique_for_seconds=self.unique_for_seconds,
            expires_at=self.expires_at,
            depends_on=self.depends_on,
            on_dependency_failure=self.on_dependency_failure,
        )


def task_body(
    name: str,
    payload: Any = None,
    *,
    priority: str | Priority | None = None,
    run_at: datetime | str | None = None,
    delay_seconds: float | None = None,
    max_retries: int | None = None,
    timeout_seconds: int | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    unique_key: str | None = None,
    unique_for_seconds: float | None = None,
    expires_at: datetime | str | None = None,
    depends_on: Sequence[str] | None = None,
    on_dependency_failure: str | None = None,
) -> dict[str, Any]:
    """A task's JSON body without the fields left as None."""
    body: dict[str, Any] = {"name": name, "payload": {} if payload is None else payload}
    if priority is not None:
        body["priority"] = priority.value if isinstance(priority, Priority) else priority
    if run_at is not None:
        body["run_at"] = run_at.isoformat() if isinstance(run_at, datetime) else run_at
    if delay_seconds is not None:
        body["delay_seconds"] = delay_seconds
    if max_retries is not None:
        body["max_retries"] = max_retries
    if timeout_seconds is not None:
        body["timeout_seconds"] = timeout_seconds
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if callback_url is not None:
        body["callback_url"] = callback_url
    if unique_key is not None:
        body["unique_key"] = unique_key
    if unique_for_seconds is not None:
        body["unique_for_seconds"] = unique_for_seconds
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at
    if depends_on:
        body["depends_on"] = list(depends_on)
    if on_dependency_failure is not None:
        body["on_dependency_failure"] = on_dependency_failure
    return body


@dataclass(frozen=True)
class BatchItem:
    """One item of a :meth:`Client.submit_many` answer, in request order: either
    ``task`` (created, or ``replayed``) or ``error``."""

    index: int
    status: int
    task: Task | None
    error: Exception | None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BatchResult:
    """The answer of :meth:`Client.submit_many`."""

    created: int
    failed: int
    results: list[BatchItem]
    # The batch opened (``submit_many(..., batch=...)``); when a retried request had every
    # item replayed, the batch their first submission opened.
    batch_id: str | None = None

    @property
    def tasks(self) -> list[Task]:
        """The accepted tasks (created or replayed), in request order."""
        return [r.task for r in self.results if r.task is not None]


@dataclass(frozen=True)
class Batch:
    """A batch (:meth:`Client.get_batch`): ``counts`` of its tasks by state,
    ``remaining`` (not final), ``progress`` (percent final), ``status`` (``OPEN``, or
    ``COMPLETED`` once every task was final and the completion fired)."""

    id: str
    status: str
    total: int
    remaining: int
    progress: int
    counts: dict[str, int]
    callback_url: str | None
    on_complete: dict[str, Any] | None
    created_at: datetime | None
    completed_at: datetime | None
    callback_task_id: str | None
    follow_up_task_id: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_complete(self) -> bool:
        return self.status == "COMPLETED"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            total=int(data["total"]),
            remaining=int(data["remaining"]),
            progress=int(data["progress"]),
            counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
            callback_url=data.get("callback_url"),
            on_complete=data.get("on_complete"),
            created_at=parse_datetime(data.get("created_at")),
            completed_at=parse_datetime(data.get("completed_at")),
            callback_task_id=data.get("callback_task_id"),
            follow_up_task_id=data.get("follow_up_task_id"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a cursor-paginated listing; pass ``next_cursor`` to get the next."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class RedriveResult:
    """What a bulk redrive moved back to QUEUED."""

    redriven: int
    ids: list[str]


@dataclass(frozen=True)
class PurgeResult:
    """What one purge call deleted, and whether more dead letters match (call again)."""

    purged: int
    ids: list[str]
    more: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PurgeResult:
        return cls(int(data["purged"]), [str(i) for i in data.get("ids") or []], bool(data.get("more", False)))


@dataclass(frozen=True)
class BulkCancelResult:
    """What one cancel-by-filter call did: waiting tasks cancelled (``ids``), running ones
    asked to stop (``requested_ids``), and whether more match (call again)."""

    cancelled: int
    cancel_requested: int
    ids: list[str]
    requested_ids: list[str]
    more: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BulkCancelResult:
        return cls(
            int(data["cancelled"]),
            int(data["cancel_requested"]),
            [str(i) for i in data.get("ids") or []],
            [str(i) for i in data.get("requested_ids") or []],
            bool(data.get("more", False)),
        )


@dataclass(frozen=True)
class TypePause:
    """A task type's pause state for the caller's tenant after a pause or resume call:
    ``paused`` (a resume may leave an operator's global pause in force), ``changed``
    (False: it already was so), and how many waiting tasks were taken out of the queue
    (pause) or put back (resume)."""

    name: str
    paused: bool
    changed: bool
    moved: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TypePause:
        moved = data.get("moved", data.get("requeued", 0))
        return cls(str(data["name"]), bool(data["paused"]), bool(data["changed"]), int(moved or 0))


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the tenant's audit log: who (``actor``, e.g. ``key:<id>``) did what
    (``action``, e.g. ``schedule.created``) to which subject."""

    id: int
    at: datetime | None
    actor: str
    action: str
    subject_type: str
    subject_id: str | None
    details: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        return cls(
            id=int(data["id"]),
            at=parse_datetime(data.get("at")),
            actor=str(data["actor"]),
            action=str(data["action"]),
            subject_type=str(data.get("subject_type", "")),
            subject_id=data.get("subject_id"),
            details=dict(data.get("details") or {}),
            raw=dict(data),
        )


@dataclass(frozen=True)
class ScheduleTask:
    """The task a schedule creates at every tick."""

    name: str
    payload: Any = None
    priority: str | None = None
    max_retries: int | None = None
    timeout_seconds: int | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "payload": {} if self.payload is None else self.payload}
        for key in ("priority", "max_retries", "timeout_seconds"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleTask:
        return cls(
            name=str(data["name"]),
            payload=data.get("payload"),
            priority=data.get("priority"),
            max_retries=data.get("max_retries"),
            timeout_seconds=data.get("timeout_seconds"),
        )


@dataclass(frozen=True)
class ScheduleRun:
    """A tick that fired, with the task it created."""

    fire_at: datetime
    task_id: str
    status: str | None  # None once the task is gone (pruned after retention)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleRun:
        status = data.get("status")
        return cls(_required_datetime(data["fire_at"]), str(data["task_id"]), None if status is None else str(status))


@dataclass(frozen=True)
class Schedule:
    """A cron schedule.  ``next_fire_times`` and ``recent_runs`` come with
    :meth:`Client.get_schedule` only."""

    id: str
    name: str
    cron: str
    timezone: str
    task: ScheduleTask
    enabled: bool
    catch_up: str
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    next_fire_times: list[datetime] = field(default_factory=list)
    recent_runs: list[ScheduleRun] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            cron=str(data["cron"]),
            timezone=str(data.get("timezone", "UTC")),
            task=ScheduleTask.from_dict(data["task"]),
            enabled=bool(data.get("enabled", True)),
            catch_up=str(data.get("catch_up", "once")),
            next_fire_at=parse_datetime(data.get("next_fire_at")),
            last_fired_at=parse_datetime(data.get("last_fired_at")),
            created_at=parse_datetime(data.get("created_at")),
            updated_at=parse_datetime(data.get("updated_at")),
            next_fire_times=[_required_datetime(t) for t in data.get("next_fire_times") or []],
            recent_runs=[ScheduleRun.from_dict(r) for r in data.get("recent_runs") or []],
            raw=dict(data),
        )


@dataclass(frozen=True)
class WebhookSecret:
    """The tenant's webhook signing secret."""

    secret: str
    algorithm: str
    header: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WebhookSecret:
        return cls(str(data["secret"]), str(data.get("algorithm", "")), str(data.get("header", "")))


@dataclass(frozen=True)
class Stats:
    """``GET /api/v1/stats``: today's totals, by priority, by task name and per minute.
    The groups are kept as the API's dicts (counts such as ``submitted``, ``completed``,
    ``queue_size``, ``avg_run_seconds``)."""

    tenant: str | None
    generated_at: datetime | None
    totals: dict[str, Any]
    by_priority: list[dict[str, Any]]
    by_name: list[dict[str, Any]]
    per_minute: list[dict[str, Any]]
    sweeper: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        return cls(
            tenant=data.get("tenant"),
            generated_at=parse_datetime(data.get("generated_at")),
            totals=dict(data.get("totals") or {}),
            by_priority=list(data.get("by_priority") or []),
            by_name=list(data.get("by_name") or []),
            per_minute=list(data.get("per_minute") or []),
            sweeper=dict(data.get("sweeper") or {}),
            raw=dict(data),
        )


@dataclass(frozen=True)
class WebhookEvent:
    """A verified completion webhook: ``event`` (e.g. ``task.completed``) and the task's
    summary (``id``, ``name``, ``status``, ``attempts``, ``result``, ``last_error``, ...);
    for ``batch.completed``, ``batch`` (``id``, ``total``, ``completed``, ``failed``,
    ``cancelled``, ``follow_up_task_id``, ...) and an empty ``task``.  ``delivery_id``:
    the signed body's ``delivery`` (the same across redeliveries: deduplicate on it)."""

    event: str
    task: dict[str, Any]
    timestamp: int
    delivery_id: str | None
    batch: dict[str, Any] | None = None
