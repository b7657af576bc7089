"""The audit log's vocabulary and records: who changed what, besides task transitions.

Task transitions are recorded in ``task_events`` (with their actor); everything else a
tenant or an operator changes (API keys, schedules, the webhook secret, dead letters
purged or redriven in bulk) is an ``audit_log`` row (migration 0004), written by the
same statement as the change.  No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

Row = Mapping[str, Any]


class AuditAction(StrEnum):
    """What happened, as ``<subject>.<verb>``; the values are stored and filtered on."""

    API_KEY_CREATED = "api_key.created"  # CLI: keys create
    API_KEY_REVOKED = "api_key.revoked"  # CLI: keys revoke (an already revoked key writes nothing)
    SCHEDULE_CREATED = "schedule.created"
    SCHEDULE_UPDATED = "schedule.updated"  # a PATCH that did not switch it on or off
    SCHEDULE_ENABLED = "schedule.enabled"  # a PATCH that switched it on (other changes in details)
    SCHEDULE_DISABLED = "schedule.disabled"  # a PATCH that switched it off (other changes in details)
    SCHEDULE_DELETED = "schedule.deleted"
    WEBHOOK_SECRET_ROTATED = "webhook_secret.rotated"  # noqa: S105 - an action name; never with the secret
    DEAD_LETTERS_PURGED = "dead_letters.purged"
    DEAD_LETTERS_REDRIVEN = "dead_letters.redriven"  # the bulk redrive
    TASK_TYPE_PAUSED = "task_type.paused"  # a tenant's key, or the CLI (tenant "" for a global pause)
    TASK_TYPE_RESUMED = "task_type.resumed"
    TASKS_CANCELLED = "tasks.cancelled"  # cancel by filter (single cancels are in the task's events)
    TENANT_LIMITS_UPDATED = "tenant_limits.updated"  # CLI: tenants set (weight, quotas)


def key_actor(key_id: str) -> str:
    """The actor an API key's changes are recorded under."""
    return f"key:{key_id}"


def cli_actor(user: str) -> str:
    """The actor the operator CLI's changes are recorded under."""
    return f"cli:{user or 'unknown'}"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of ``audit_log`` (query ``audit_entries``)."""

    id: int
    at: datetime
    tenant: str
    actor: str
    action: str  # an AuditAction value (kept as text: rows outlive renamed members)
    subject_type: str
    subject_id: str | None
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: Row) -> AuditEntry:
        return cls(
            id=int(row["id"]),
            at=row["at"],
            tenant=row["tenant"],
            actor=row["actor"],
            action=row["action"],
            subject_type=row["subject_type"],
            subject_id=row["subject_id"],
            details=dict(row["details"] or {}),
        )


@dataclass(frozen=True, slots=True)
class Purged:
    """What one purge call deleted (query ``purge_dead_letters``): the ids, and whether
    more dead letters match the same filter (call again to purge them)."""

    ids: list[str]
    more: bool

    @classmethod
    def from_row(cls, row: Row) -> Purged:
        return cls([str(i) for i in row["ids"] or []], bool(row["more"]))
