"""The claim's rows in the order the drainer asked for them (``Store.claim``).

The claim statement returns its rows in no particular order (UPDATE ... RETURNING
promises none); ordering them here costs less than the join, aggregate and sort the
statement used to set up on every claim, usually for a single row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def in_given_order(rows: list[dict[str, Any]], ids: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` (each with its ``id`` as canonical text) in the order of ``ids``, which is
    Redis's claim order; a duplicate id keeps its first place."""
    if len(rows) < 2:
        return rows
    first: dict[str, int] = {}
    for n, i in enumerate(ids):
        first.setdefault(i, n)
    return sorted(rows, key=lambda r: first.get(r["id"], len(first)))
