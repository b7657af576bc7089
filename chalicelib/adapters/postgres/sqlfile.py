"""Loads ``-- name: x`` blocks from a .sql file into a dict (Procrastinate's habit)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split SQL text into ``{name: statement}``; text before the first name is ignored."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=False):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        statement = body.strip().rstrip(";").strip()
        if not statement:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = statement
    return queries


@lru_cache(maxsize=1)
def queries() -> dict[str, str]:
    """The named queries of ``queries.sql`` beside this module."""
    return parse_queries((Path(__file__).with_name("queries.sql")).read_text())
