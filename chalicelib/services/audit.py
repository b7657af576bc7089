"""Reading the audit log: a tenant's entries, newest first, in keyset pages.

The entries are written by the changes themselves (see ``core.audit``); nothing here
writes.  Scoped to the caller's tenant like every other read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chalicelib.container import Container
from chalicelib.core.audit import AuditAction, AuditEntry


@dataclass(frozen=True)
class AuditPosition:
    """Where a page ended: the (at, id) of its last entry."""

    at: datetime
    entry_id: int


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEntry]
    next_after: AuditPosition | None  # None on the last page


def entries(
    rt: Container, tenant: str, *, action: AuditAction | None, limit: int, after: AuditPosition | None
) -> AuditPage:
    """One page; ``after`` is the previous page's ``next_after``."""
    found = rt.store.audit_entries(
        tenant,
        action=action.value if action else None,
        after=(after.at, after.entry_id) if after else None,
        limit=limit + 1,
    )
    more = len(found) > limit
    items = found[:limit]
    last = items[-1] if more and items else None
    return AuditPage(items, AuditPosition(last.at, last.id) if last else None)
