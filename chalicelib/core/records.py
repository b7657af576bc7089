"""What the store returns besides ``Task``: one frozen record per kind of row.

Each record is built in exactly one place, its ``from_row``, from the row of the
named query (``adapters/postgres/queries.sql``) written next to it; the query's
column aliases are the keys ``from_row`` reads, so that contract is written down
once and a renamed alias fails loudly (``KeyError``) instead of spreading a typo.
No I/O here: the rows are plain mappings handed over by the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.core.model import Priority, Status, Task

Row = Mapping[str, Any]


def _id(value: Any) -> str:
    return str(value)


def _opt_id(value: Any) -> str | None:
    return None if value is None else str(value)


# --- tasks: events, idempotency, drain and sweep -----------------------------------------


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One row of a task's audit trail (query ``task_events``)."""

    at: datetime
    from_status: Status | None  # None for the event that created the task
    to_status: Status
    attempt: int
    actor: str
    error: str | None
    error_type: str | None

    @classmethod
    def from_row(cls, row: Row) -> TaskEvent:
        before = row["from_status"]
        return cls(
            at=row["at"],
            from_status=Status(before) if before is not None else None,
            to_status=Status(row["to_status"]),
            attempt=row["attempt"],
            actor=row["actor"],
            error=row["error"],
            error_type=row["error_type"],
        )


@dataclass(frozen=True, slots=True)
class IdempotentTask:
    """A task found by its idempotency key (query ``tasks_by_idempotency_keys``), with
    the fingerprint of the request that created it."""

    task: Task
    request_hash: str | None

    @classmethod
    def from_row(cls, row: Row) -> IdempotentTask:
        return cls(Task.from_row(row), row["request_hash"])


@dataclass(frozen=True, slots=True)
class Recorded:
    """A task whose attempt outcome was recorded (queries ``finish``; the sweeper's
    rescue goes through it too).  ``run_at_ms`` is the retry's due time when the task
    went back to PENDING; ``hook_id`` the completion webhook task the transition created;
    ``redrives`` how many times the task was redriven before this run (migration 0031)."""

    id: str
    tenant: str
    name: str
    status: Status
    priority: Priority
    attempts: int
    run_at_ms: float
    hook_id: str | None
    hook_enqueued_ms: float | None
    has_followers: bool = False  # a trigger reacts to its end: the outbox may have work
    redrives: int = 0

    @classmethod
    def from_row(cls, row: Row) -> Recorded:
        return cls(
            row["id"],
            row["tenant"],
            row["name"],
            Status(row["status"]),
            Priority(row["priority"]),
            row["attempts"],
            row["run_at_ms"],
            row["hook_id"],
            row["hook_enqueued_ms"],
            row["has_followers"],
            row["redrives"],
        )


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease the heartbeat still holds (query ``extend_leases``)."""

    id: str
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: Row) -> HeldLease:
        return cls(_id(row["id"]), row["cancel_requested"])


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    """A PROCESSING task whose lease ran out, locked for the sweeper's rescue
    (query ``lock_expired_leases``)."""

    id: str
    lease_token: str
    attempts: int
    max_retries: int
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: Row) -> ExpiredLease:
        return cls(
            _id(row["id"]), _id(row["lease_token"]), row["attempts"], row["max_retries"], row["cancel_requested"]
        )


@dataclass(frozen=True, slots=True)
class ReadyTask:
    """A QUEUED task as Redis's ready set holds it (queries ``promote_due`` and
    ``queued_older_than``); ``enqueued_ms`` is its enqueue time in epoch ms."""

    id: str
    tenant: str
    name: str
    priority: Priority
    enqueued_ms: float
    paused: bool = False  # its type is paused (promote_due): QUEUED, but kept out of Redis

    @classmethod
    def from_row(cls, row: Row) -> ReadyTask:
        return cls(
            _id(row["id"]),
            row["tenant"],
            row["name"],
            Priority(row["priority"]),
            row["enqueued_ms"],
            bool(row.get("paused")),
        )


@dataclass(frozen=True, slots=True)
class LiveTask:
    """A task in a live state, as the Redis rebuild needs it (query ``live_tasks_page``):
    ``enqueued_ms`` for QUEUED, ``run_at_ms`` for PENDING, ``lease_ms`` (the lease
    deadline) for PROCESSING; epoch milliseconds."""

    id: str
    tenant: str
    name: str
    status: Status
    priority: Priority
    enqueued_ms: float
    run_at_ms: float
    lease_ms: float | None

    @classmethod
    def from_row(cls, row: Row) -> LiveTask:
        return cls(
            _id(row["id"]),
            row["tenant"],
            row["name"],
            Status(row["status"]),
            Priority(row["priority"]),
            row["enqueued_ms"],
            row["run_at_ms"],
            row["lease_ms"],
        )


@dataclass(frozen=True, slots=True)
class TaskState:
    """A task's current status (query ``statuses_of``); ``enqueued_ms`` is None when it
    was never queued."""

    id: str
    tenant: str
    name: str
    status: Status
    priority: Priority
    enqueued_ms: float | None
    paused: bool = False  # its type is paused: a QUEUED one stays out of Redis

    @classmethod
    def from_row(cls, row: Row) -> TaskState:
        return cls(
            _id(row["id"]),
            row["tenant"],
            row["name"],
            Status(row["status"]),
            Priority(row["priority"]),
            row["enqueued_ms"],
            bool(row.get("paused")),
        )


@dataclass(frozen=True, slots=True)
class WebhookHook:
    """The completion-webhook task a cancellation created (query ``cancel_waiting``)."""

    id: str
    enqueued_ms: float


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What a cancel did (``Store.cancel``): the task as it is now (CANCELLED if it was
    waiting, cancel-requested if running, unchanged if final), its status when the
    cancel arrived, and the completion webhook task the cancellation created."""

    task: Task
    before: Status
    hook: WebhookHook | None = None


# --- unique keys and deadlines (migration 0010) -------------------------------------------


@dataclass(frozen=True, slots=True)
class UniqueHolder:
    """The task holding a unique key (query ``unique_key_holders``)."""

    key: str
    task: Task

    @classmethod
    def from_row(cls, row: Row) -> UniqueHolder:
        return cls(row["held_key"], Task.from_row(row))


@dataclass(frozen=True, slots=True)
class ExpiredTask:
    """A waiting task finalised because its ``expires_at`` passed (query
    ``expire_waiting``): what Redis needs to drop it (its status before: QUEUED ids sit
    in a ready set, PENDING ones in ``delayed``) and the completion webhook it created."""

    id: str
    tenant: str
    name: str
    priority: Priority
    before: Status
    hook: WebhookHook | None
    has_followers: bool = False  # a trigger may have released tasks (the outbox)

    @classmethod
    def from_row(cls, row: Row) -> ExpiredTask:
        hook = WebhookHook(_id(row["hook_id"]), row["hook_enqueued_ms"]) if row["hook_id"] is not None else None
        before = Status(row["from_status"])
        return cls(
            _id(row["id"]), row["tenant"], row["name"], Priority(row["priority"]), before, hook, row["has_followers"]
        )


# --- API keys -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key to insert: only its hash and display prefix are stored, never the secret."""

    id: str
    tenant: str
    name: str
    key_prefix: str
    key_hash: str
    rate_limit_per_minute: int | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One row of ``api_keys`` without its hash (queries ``insert_api_key``,
    ``list_api_keys``, ``revoke_api_key``)."""

    id: str
    tenant: str
    name: str
    key_prefix: str
    rate_limit_per_minute: int | None
    created_at: datetime
    expires_at: datetime | None
    disabled_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> ApiKeyRecord:
        return cls(
            _id(row["id"]),
            row["tenant"],
            row["name"],
            row["key_prefix"],
            row["rate_limit_per_minute"],
            row["created_at"],
            row["expires_at"],
            row["disabled_at"],
        )

    def state(self, now: datetime) -> str:
        """``revoked``, ``expired`` or ``active`` at ``now``."""
        if self.disabled_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key found by its hash (query ``api_key_by_hash``): the record, the hash to
    compare in constant time, and whether the database's clock says it is usable."""

    key: ApiKeyRecord
    key_hash: str
    active: bool

    @classmethod
    def from_row(cls, row: Row) -> StoredKey:
        return cls(ApiKeyRecord.from_row(row), row["key_hash"], row["active"])


# --- schedules ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What a schedule says (a validated body): the cron, and the task each tick fires."""

    name: str
    cron: str
    timezone: str
    task_name: str
    payload: dict[str, Any]
    priority: str
    max_retries: int
    timeout_seconds: int
    enabled: bool
    catch_up: str  # "once" or "skip"


@dataclass(frozen=True, slots=True)
class Schedule:
    """One row of ``schedules`` (queries ``insert_schedule``, ``get_schedule``,
    ``list_schedules``, ``update_schedule``, ``lock_due_schedules``)."""

    id: str
    tenant: str
    spec: ScheduleSpec
    next_fire_at: datetime
    last_fired_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Schedule:
        spec = ScheduleSpec(
            name=row["name"],
            cron=row["cron"],
            timezone=row["timezone"],
            task_name=row["task_name"],
            payload=row["payload"],
            priority=row["priority"],
            max_retries=row["max_retries"],
            timeout_seconds=row["timeout_seconds"],
            enabled=row["enabled"],
            catch_up=row["catch_up"],
        )
        return cls(
            id=_id(row["id"]),
            tenant=row["tenant"],
            spec=spec,
            next_fire_at=row["next_fire_at"],
            last_fired_at=row["last_fired_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One tick a schedule fired and its task's status now (query ``schedule_runs``);
    ``status`` is None once the task was pruned."""

    fire_at: datetime
    task_id: str
    status: Status | None

    @classmethod
    def from_row(cls, row: Row) -> ScheduleRun:
        status = row["status"]
        return cls(row["fire_at"], _id(row["task_id"]), Status(status) if status is not None else None)
