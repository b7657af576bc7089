"""The claim's parameters as its statement takes them, and its rows in the order the
drainer asked for them (``Store.claim``, ``Store.send_claim``).

The claim statement returns its rows in no particular order (UPDATE ... RETURNING
promises none); ordering them here costs less than the join, aggregate and sort the
statement used to set up on every claim, usually for a single row."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from chalicelib.core.model import Claimed


def claimed(rows: list[dict[str, Any]], ids: Sequence[str]) -> list[Claimed]:
    """The claim's answer: its rows as tasks, in the order of ``ids``."""
    return [Claimed.from_row(r) for r in in_given_order(rows, ids)]


def claim_params(ids: Sequence[str], token: str, lease_seconds: float, actor: str) -> dict[str, Any]:
    """The claim statement's parameters (``queries.sql``'s ``claim``)."""
    return {"ids": id_array(ids), "token": token, "lease_seconds": lease_seconds, "actor": actor}


def in_given_order(rows: list[dict[str, Any]], ids: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` (each with its ``id`` as canonical text) in the order of ``ids``, which is
    Redis's claim order; a duplicate id keeps its first place."""
    if len(rows) < 2:
        return rows
    first: dict[str, int] = {}
    for n, i in enumerate(ids):
        first.setdefault(i, n)
    return sorted(rows, key=lambda r: first.get(r["id"], len(first)))


# Ids of hex digits and hyphens only (none empty, none with a comma): joined by commas
# they are an array literal whose elements are exactly these ids (no quotes, braces,
# backslashes or empty elements to read otherwise).
_PLAIN_IDS = re.compile(r"[0-9A-Fa-f-]+(?:,[0-9A-Fa-f-]+)*")
_UUID_ARRAY = "{{{}}}"


def id_array(ids: Sequence[str]) -> str | list[str]:
    """The claim's ids as the text of a ``uuid[]`` (the statement casts it): psycopg's
    list dumper, which looks for the elements' type on every call, was ~55k of the
    ~440k client instructions of a one-task claim (issue 14, round 10).  Anything else
    goes as a list, as before."""
    text = ",".join(ids)
    if _PLAIN_IDS.fullmatch(text) and text.count(",") == len(ids) - 1:
        return _UUID_ARRAY.format(text)
    return list(ids)
