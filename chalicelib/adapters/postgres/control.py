"""The store's queue-control statements: pausing task types and cancelling by filter
(``Store`` inherits them, as it does ``AuditQueries``).  The SQL is in ``queries.sql``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from chalicelib.core.control import BulkCancelled, Pause, PausedGauge
from chalicelib.core.model import Task

Row = dict[str, Any]


class _Queries(Protocol):
    _webhook: dict[str, int]

    def _one(self, name: str, params: dict[str, Any]) -> Row | None: ...
    def _all(self, name: str, params: dict[str, Any]) -> list[Row]: ...


class ControlQueries:
    """A mixin of ``Store``."""

    def pause_task_type(self: _Queries, name: str, tenant: str, *, actor: str) -> Pause:
        """Pause ``name`` for ``tenant`` (``core.control.GLOBAL``: every tenant), with its
        audit row; the pause in force (``changed`` False) when it was paused already."""
        params = {"name": name, "tenant": tenant, "actor": actor}
        row = self._one("pause_task_type", params)
        if row is None:
            # A concurrent pause won the insert after this statement's snapshot was taken:
            # it is paused now, and that pause is the one to report.
            row = self._one("pause_task_type", params)
        assert row is not None
        return Pause.from_row(row)

    def resume_task_type(self: _Queries, name: str, tenant: str, *, actor: str) -> Pause | None:
        """Lift the pause, with its audit row; None when it was not paused."""
        row = self._one("resume_task_type", {"name": name, "tenant": tenant, "actor": actor})
        return Pause.from_row(row) if row else None

    def paused_task_types(self: _Queries, tenant: str | None) -> list[Pause]:
        """The pauses ``tenant`` is under (its own and the global ones); every pause for None."""
        return [Pause.from_row(r) for r in self._all("paused_task_types", {"tenant": tenant})]

    def queued_of_type(
        self: _Queries, name: str, tenant: str | None, *, unpaused_only: bool, page_size: int = 2000
    ) -> Iterator[list[Task]]:
        """QUEUED tasks of ``name`` (of ``tenant``, or of all), oldest first, in keyset pages;
        ``unpaused_only`` leaves out those a pause holds."""
        after: tuple[datetime, str] | None = None
        while True:
            params = {
                "name": name,
                "tenant": tenant,
                "unpaused_only": unpaused_only,
                "after_at": after[0] if after else None,
                "after_id": after[1] if after else None,
                "limit": page_size,
            }
            page = [Task.from_row(r) for r in self._all("queued_of_type", params)]
            if page:
                yield page
            if len(page) < page_size:
                return
            last = page[-1]
            assert last.enqueued_at is not None  # every QUEUED row has one
            after = (last.enqueued_at, last.id)

    def cancel_tasks(
        self: _Queries,
        tenant: str,
        *,
        status: str | None,
        name: str | None,
        priority: str | None,
        created_before: datetime | None,
        limit: int,
        actor: str,
    ) -> list[BulkCancelled]:
        """Cancel at most ``limit`` of the tenant's live tasks matching every filter given
        (None: not filtered on), with their events, webhooks and one audit row."""
        given: dict[str, Any] = {
            "status": status,
            "name": name,
            "priority": priority,
            "created_before": created_before,
        }
        filters = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in given.items() if v is not None}
        params = {
            "tenant": tenant,
            **given,
            "limit": limit,
            "actor": actor,
            "filter": json.dumps(filters),
            **self._webhook,
        }
        return [BulkCancelled.from_row(r) for r in self._all("cancel_tasks", params)]

    def paused_gauges(self: _Queries) -> list[PausedGauge]:
        return [PausedGauge.from_row(r) for r in self._all("paused_gauges", {})]
