"""Cheaper versions of two of chalice's per-request helpers, for the local API server.

Both are pure and answer exactly as chalice's do; the local server installs them once
per process (``install``) because chalice calls them through its module's globals.
Measured on a submit with callgrind (bench/RESULTS.md, round 7): chalice's request
path ran ``_matches_content_type`` three times, lower-casing all 17 of the API's
binary media types twice, and every header lookup went through ``Mapping.get``'s
Python-level ``try``/``except`` around ``__getitem__``.  Lambda keeps chalice as it is.
"""

from __future__ import annotations

from typing import Any

_REMEMBERED = 256  # (header value, media types) pairs: a client may send any Content-Type or Accept


def install() -> None:
    """Replace chalice's helpers in this process (idempotent)."""
    import chalice.app

    if not getattr(chalice.app._matches_content_type, "remembers", False):
        chalice.app._matches_content_type = remembering(chalice.app._matches_content_type)
    chalice.app.CaseInsensitiveMapping.get = _mapping_get  # type: ignore[method-assign]


def remembering(match: Any) -> Any:
    """``match(content_type, valid_content_types)`` with its answers remembered."""
    known: dict[tuple[str, tuple[str, ...]], bool] = {}

    def remembered(content_type: str, valid_content_types: list[str]) -> bool:
        key = (content_type, tuple(valid_content_types))
        found = known.get(key)
        if found is None:
            found = bool(match(content_type, valid_content_types))
            if len(known) >= _REMEMBERED:
                known.clear()
            known[key] = found
        return found

    remembered.remembers = True  # type: ignore[attr-defined]
    return remembered


def _mapping_get(self: Any, key: str, default: Any = None) -> Any:
    """``CaseInsensitiveMapping.get`` in one dict lookup (its keys are stored lower-cased)."""
    return self._dict.get(key.lower(), default)
