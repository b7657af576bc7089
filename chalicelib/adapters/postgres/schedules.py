"""The store's side of cron schedules (``Store`` inherits it), kept apart so ``store.py``
stays readable; the SQL is in ``queries.sql`` like the rest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

import psycopg

from chalicelib.adapters.postgres.jsontext import dumps
from chalicelib.core.audit import AuditAction
from chalicelib.core.ids import new_ids
from chalicelib.core.model import Task
from chalicelib.core.records import Schedule, ScheduleRun, ScheduleSpec
from chalicelib.core.tracecontext import new_root

Row = dict[str, Any]


class _Store(Protocol):
    _q: dict[str, str]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Row]]: ...
    def _one(self, name: str, params: dict[str, Any]) -> Row | None: ...
    def _all(self, name: str, params: dict[str, Any]) -> list[Row]: ...


class ScheduleQueries:
    """A mixin of ``Store``."""

    def insert_schedule(
        self: _Store, tenant: str, schedule_id: str, spec: ScheduleSpec, next_fire_at: datetime, *, actor: str
    ) -> Schedule | None:
        """None when the tenant already has a schedule of that name."""
        params = {**_schedule_params(tenant, schedule_id, spec, next_fire_at), "actor": actor}
        row = self._one("insert_schedule", params)
        return Schedule.from_row(row) if row else None

    def get_schedule(self: _Store, tenant: str, schedule_id: str) -> Schedule | None:
        row = self._one("get_schedule", {"id": schedule_id, "tenant": tenant})
        return Schedule.from_row(row) if row else None

    def list_schedules(self: _Store, tenant: str, *, limit: int = 500) -> list[Schedule]:
        return [Schedule.from_row(r) for r in self._all("list_schedules", {"tenant": tenant, "limit": limit})]

    def update_schedule(
        self: _Store,
        tenant: str,
        schedule_id: str,
        spec: ScheduleSpec,
        next_fire_at: datetime,
        *,
        actor: str,
        action: AuditAction,
        changed: Sequence[str],
    ) -> Schedule | None:
        """None when the schedule is gone (deleted meanwhile).  ``action`` and ``changed``
        (field names) go to the audit row."""
        params = _schedule_params(tenant, schedule_id, spec, next_fire_at)
        params.update(actor=actor, action=action.value, changed=dumps(list(changed)))
        row = self._one("update_schedule", params)
        return Schedule.from_row(row) if row else None

    def delete_schedule(self: _Store, tenant: str, schedule_id: str, *, actor: str) -> bool:
        return self._one("delete_schedule", {"id": schedule_id, "tenant": tenant, "actor": actor}) is not None

    def schedule_runs(self: _Store, schedule_id: str, *, limit: int = 10) -> list[ScheduleRun]:
        """The schedule's latest ticks, newest first."""
        return [ScheduleRun.from_row(r) for r in self._all("schedule_runs", {"id": schedule_id, "limit": limit})]

    def fire_due_schedules(
        self: _Store,
        plan: Callable[[Schedule, datetime], tuple[datetime | None, datetime]],
        *,
        limit: int = 100,
        actor: str = "sweep",
    ) -> list[Task]:
        """For each due schedule, ``plan(schedule, database now)`` says which tick to fire
        (or None) and the next fire time; fires and advances them in one transaction.
        Returns the tasks created (to be pushed to Redis after the commit)."""
        created: list[Task] = []
        with self.connection() as conn, conn.transaction():
            for row in conn.execute(self._q["lock_due_schedules"], {"limit": limit}).fetchall():
                schedule = Schedule.from_row(row)
                fire_at, next_fire_at = plan(schedule, row["db_now"])
                if fire_at is not None:
                    params = {
                        "schedule_id": schedule.id,
                        "fire_at": fire_at,
                        "task_id": new_ids(1)[0],
                        "actor": actor,
                        # Each fired task is a trace of its own.
                        "trace_context": new_root().header(),
                    }
                    created += [Task.from_row(r) for r in conn.execute(self._q["fire_schedule"], params)]
                conn.execute(
                    self._q["advance_schedule"],
                    {"id": schedule.id, "next_fire_at": next_fire_at, "fired_at": fire_at},
                )
        return created


def _schedule_params(tenant: str, schedule_id: str, spec: ScheduleSpec, next_fire_at: datetime) -> dict[str, Any]:
    return {
        "id": schedule_id,
        "tenant": tenant,
        "name": spec.name,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "task_name": spec.task_name,
        "payload": dumps(spec.payload),
        "priority": spec.priority,
        "max_retries": spec.max_retries,
        "timeout_seconds": spec.timeout_seconds,
        "enabled": spec.enabled,
        "catch_up": spec.catch_up,
        "next_fire_at": next_fire_at,
    }
