"""The store's unique-key and deadline queries (``Store`` inherits them; migration 0010).

Kept apart so ``store.py`` stays readable; the SQL is in ``queries.sql`` like the rest,
and these methods run on the ``Store``'s pool through its ``_one``/``_all``.  Taking a
unique key is part of the submit statement itself (``insert_tasks``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chalicelib.core.records import ExpiredTask, UniqueHolder

Row = dict[str, Any]


class _Queries(Protocol):
    _webhook: dict[str, int]

    def _one(self, name: str, params: dict[str, Any]) -> Row | None: ...
    def _all(self, name: str, params: dict[str, Any]) -> list[Row]: ...
    def _rowcount(self, name: str, params: dict[str, Any]) -> int: ...


class DeadlineQueries:
    """A mixin of ``Store``."""

    def unique_key_holders(self: _Queries, tenant: str, keys: Sequence[str]) -> dict[str, UniqueHolder]:
        """The tasks holding the tenant's ``keys``, by key.  ``keys`` repeats a key once
        per submit answered with its holder (the 'deduplicated' counter counts them); a
        key missing from the answer is free again (its holder finished or its window
        passed), so the submit may try again."""
        rows = self._all("unique_key_holders", {"tenant": tenant, "keys": list(keys)})
        return {h.key: h for h in (UniqueHolder.from_row(r) for r in rows)}

    def count_deduplicated(self: _Queries, per_name: Mapping[str, int]) -> None:
        """Count submits answered with a task their own request created for its unique key."""
        if per_name:
            self._rowcount("count_deduplicated", {"names": list(per_name), "counts": list(per_name.values())})

    def expire_waiting(
        self: _Queries, *, ids: Sequence[str] | None = None, limit: int = 1000, actor: str = "sweep"
    ) -> list[ExpiredTask]:
        """Finalise waiting tasks past their ``expires_at`` (of ``ids``, when given) as
        CANCELLED with error_type ``Expired``; returns them for Redis to drop."""
        params = {"ids": list(ids) if ids is not None else None, "limit": limit, "actor": actor, **self._webhook}
        return [ExpiredTask.from_row(r) for r in self._all("expire_waiting", params)]

    def prune_unique_keys(self: _Queries, *, limit: int = 5000) -> int:
        """Delete unique keys whose window has passed; returns how many."""
        return self._rowcount("prune_unique_keys", {"limit": limit})
