"""The store's side of per-tenant weights and quotas (``Store`` inherits it), kept
apart so ``store.py`` stays readable; the SQL is in ``queries.sql`` like the rest."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import psycopg

from chalicelib.core.tenants import TenantLimits

Row = dict[str, Any]


class _Store(Protocol):
    _q: dict[str, str]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Row]]: ...


class TenantQueries:
    """A mixin of ``Store``."""

    def set_tenant_limits(
        self: _Store,
        tenant: str,
        *,
        actor: str,
        weight: float | None = None,
        max_queued: int | None = None,
        max_running: int | None = None,
        clear_max_queued: bool = False,
        clear_max_running: bool = False,
    ) -> TenantLimits:
        """Change what is given (None keeps a value), audited as ``tenant_limits.updated``."""
        params = {
            "tenant": tenant,
            "actor": actor,
            "weight": weight,
            "max_queued": max_queued,
            "max_running": max_running,
            "clear_max_queued": clear_max_queued,
            "clear_max_running": clear_max_running,
        }
        with self.connection() as conn:
            row = conn.execute(self._q["set_tenant_limits"], params).fetchone()
        assert row is not None  # an upsert always returns its row
        return TenantLimits.from_row(row)

    def list_tenant_limits(self: _Store, tenant: str | None = None) -> list[TenantLimits]:
        """Every configured tenant (or ``tenant`` alone), by name."""
        with self.connection() as conn:
            rows = conn.execute(self._q["list_tenant_limits"], {"tenant": tenant}).fetchall()
        return [TenantLimits.from_row(r) for r in rows]
