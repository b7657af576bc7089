"""Records of queue control: paused task types and cancellation by filter.

A pause names a task type and a tenant; the empty tenant ``GLOBAL`` pauses the type
for every tenant (an operator's pause).  The claim statement refuses paused tasks
(migration 0008), so these records only describe what is in force.  No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.core.model import Status, Task
from chalicelib.core.records import WebhookHook

Row = Mapping[str, Any]

GLOBAL = ""  # the tenant of a pause that holds every tenant (no real tenant is empty)


@dataclass(frozen=True, slots=True)
class Pause:
    """One pause in force (queries ``pause_task_type``, ``resume_task_type``,
    ``paused_task_types``); ``changed`` is False when the call found it as it was."""

    name: str
    tenant: str  # GLOBAL for every tenant
    paused_at: datetime
    paused_by: str
    changed: bool = False

    @property
    def scope(self) -> str:
        return "global" if self.tenant == GLOBAL else "tenant"

    @classmethod
    def from_row(cls, row: Row) -> Pause:
        return cls(row["name"], row["tenant"], row["paused_at"], row["paused_by"], bool(row["changed"]))


@dataclass(frozen=True, slots=True)
class BulkCancelled:
    """One task a bulk cancel changed (query ``cancel_tasks``): as it is now (CANCELLED,
    or PROCESSING with cancel requested), its status before, the completion webhook its
    cancellation created, and whether more tasks match the filter (same on every row)."""

    task: Task
    before: Status
    hook: WebhookHook | None
    more: bool

    @classmethod
    def from_row(cls, row: Row) -> BulkCancelled:
        hook = WebhookHook(str(row["hook_id"]), row["hook_enqueued_ms"]) if row["hook_id"] is not None else None
        return cls(Task.from_row(row), Status(row["from_status"]), hook, bool(row["more"]))


@dataclass(frozen=True, slots=True)
class PausedGauge:
    """A paused task type for /metrics (query ``paused_gauges``): its global pauses (0
    or 1), how many tenants paused it, and the QUEUED tasks held back."""

    name: str
    global_pauses: int
    tenant_pauses: int
    held: int

    @classmethod
    def from_row(cls, row: Row) -> PausedGauge:
        return cls(row["name"], int(row["global_pauses"]), int(row["tenant_pauses"]), int(row["held"]))
