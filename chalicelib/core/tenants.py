"""Per-tenant fair-share weight and quotas (migration 0012, README "Fair share between
tenants").  No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEFAULT_WEIGHT = 1.0


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """One row of ``tenant_limits``; a tenant without a row has ``TenantLimits.default``."""

    tenant: str
    weight: float = DEFAULT_WEIGHT
    max_queued: int | None = None  # most ready (QUEUED) tasks at once; a submit over it is a 429
    max_running: int | None = None  # most tasks PROCESSING at once; claims skip the tenant at it
    updated_at: datetime | None = None

    @classmethod
    def default(cls, tenant: str) -> TenantLimits:
        return cls(tenant)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantLimits:
        return cls(row["tenant"], float(row["weight"]), row["max_queued"], row["max_running"], row["updated_at"])

    def as_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "max_queued": self.max_queued, "max_running": self.max_running}
