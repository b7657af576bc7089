"""The store's audit-log reads and the dead-letter purge (``Store`` inherits them).

Kept apart so ``store.py`` stays readable; the SQL is in ``queries.sql`` like the rest,
and these methods run on the ``Store``'s pool through its ``_one``/``_all``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from chalicelib.core.audit import AuditEntry, Purged

Row = dict[str, Any]


class _Queries(Protocol):
    def _one(self, name: str, params: dict[str, Any]) -> Row | None: ...
    def _all(self, name: str, params: dict[str, Any]) -> list[Row]: ...


class AuditQueries:
    """A mixin of ``Store``."""

    def purge_dead_letters(
        self: _Queries,
        tenant: str,
        *,
        ids: Sequence[str] | None,
        name: str | None,
        failed_before: datetime | None,
        error_type: str | None = None,
        limit: int,
        actor: str,
    ) -> Purged:
        """Delete (with their events) at most ``limit`` of the tenant's FAILED tasks that
        match every filter given (None: not filtered on), and write the audit row."""
        given: dict[str, Any] = {
            "ids": list(ids) if ids is not None else None,
            "name": name,
            "failed_before": failed_before,
            "error_type": error_type,
        }
        filters = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in given.items() if v is not None}
        params = {"tenant": tenant, **given, "limit": limit, "actor": actor, "filter": json.dumps(filters)}
        row = self._one("purge_dead_letters", params)
        assert row is not None  # the statement answers one row, purged or not
        return Purged.from_row(row)

    def audit_entries(
        self: _Queries, tenant: str, *, action: str | None, after: tuple[datetime, int] | None, limit: int
    ) -> list[AuditEntry]:
        """A tenant's audit rows, newest first, of one ``action`` when given; ``after`` is
        the (at, id) of the previous page's last row."""
        params = {
            "tenant": tenant,
            "action": action,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        }
        return [AuditEntry.from_row(r) for r in self._all("audit_entries", params)]
