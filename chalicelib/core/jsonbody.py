"""The body-parsing boundary: bytes in, a JSON value every later step can hold, or a 400.

JSON as RFC 8259 allows it carries things no later step can: nesting deep enough to
exhaust Python's recursion (``json.loads`` itself, ``json.dumps`` of a fingerprint,
psycopg's jsonb dump), integers and floats beyond what PostgreSQL, ``float()`` or a
JavaScript client hold (``1e400`` parses to infinity, ``NaN`` is accepted by
``json.loads``), and strings PostgreSQL refuses (U+0000) or UTF-8 cannot encode
(a lone surrogate such as ``"\\ud800"``).  Rather than each route or field guarding
against them, every request body passes here once and these three rules hold for
everything behind it:

- at most ``MAX_DEPTH`` nested arrays/objects;
- numbers finite and within a double's range (±1.8e308), integers included, so
  that ``float()``, ``math.isfinite`` and range checks work on every one of them;
- text (keys and values) valid Unicode without U+0000;
- no key twice in one object (I-JSON, RFC 7493: which one wins differs between
  parsers, so a proxy in front and Tasklane could each read another value).

The message names the offending field by its path (``tasks[2].payload.k``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from chalicelib.core.errors import ValidationError

MAX_DEPTH = 32
MAX_NUMBER = int(sys.float_info.max)  # integers beyond it break float() with OverflowError
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_UTF8_BOM = b"\xef\xbb\xbf"
_FINE = (int, float, type(None))  # what json.loads made of a number or literal is already checked (bool is an int)


class _Unholdable:
    """A number ``json.loads`` read but no later step can hold; reported with its path."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int | _Unholdable:
    if len(text) > 320:  # spares int() the work on 4,000-digit strings
        return _Unholdable(text)
    value = int(text)
    return value if -MAX_NUMBER <= value <= MAX_NUMBER else _Unholdable(text)


def _parse_float(text: str) -> float | _Unholdable:
    value = float(text)
    return value if math.isfinite(value) else _Unholdable(text)


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):  # rare: only then look for which key it was
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return value


_DECODER = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_Unholdable, object_pairs_hook=_object
)


def _decode(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    try:
        return raw.decode("utf-8")  # strict: no surrogates, no overlong forms (RFC 8259: UTF-8 only)
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"the request body is not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 4]!r}); "
            "send JSON encoded as UTF-8"
        ) from None


def _loads(text: str) -> Any:
    """``json.loads(text, parse_int=..., parse_float=..., parse_constant=...)`` with one
    decoder for every request (json.loads with options builds a new one per call)."""
    if text.startswith("\ufeff"):  # what json.loads refuses before decoding, word for word
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def parse_json(raw: bytes | str | None) -> Any:
    """Decode a request body, with a 400 that says where and why it cannot be used."""
    if raw is None or raw in (b"", ""):
        raise ValidationError("the request body is empty; send a JSON object")
    text = _decode(raw)
    try:
        value = _loads(text)
    except RecursionError:
        raise _too_deep() from None
    except _DuplicateKey as exc:
        key = str(exc.args[0])
        shown = repr(key[:60]) + ("..." if len(key) > 60 else "")
        raise ValidationError(
            f"the request body has the key {shown} twice in one object; send each key once",
            details={"duplicate_key": key[:200]},
        ) from None
    except ValueError as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}") from None
    check_value(value)
    return value


def _too_deep() -> ValidationError:
    return ValidationError(
        f"the request body nests arrays and objects more than {MAX_DEPTH} levels deep; flatten it",
        details={"max_depth": MAX_DEPTH},
    )


def _path(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "the request body"


def _unstorable(text: str) -> str:
    """What in ``text`` cannot be stored (it holds a ``_BAD_TEXT`` character)."""
    bad = _BAD_TEXT.search(text)
    assert bad is not None
    char = bad.group()
    return "U+0000 (NUL), which cannot be stored" if char == "\x00" else f"a lone surrogate U+{ord(char):04X}"


def _text_error(text: str, path: tuple[str | int, ...]) -> ValidationError:
    what = _unstorable(text)
    where = _path(path)
    return ValidationError(
        f"{where} contains {what}; send valid Unicode text without NUL characters",
        details={"field": where},
    )


def check_value(value: Any) -> None:
    """Hold a decoded JSON value to the depth, number and text rules (iteratively:
    the point is to survive what recursion cannot)."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 0, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if _BAD_TEXT.search(node):
                raise _text_error(node, path)
        elif isinstance(node, dict):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            for key, child in node.items():
                if _BAD_TEXT.search(key):
                    raise _text_error(key, (*path, key))
                if not isinstance(child, _FINE):
                    stack.append((child, depth + 1, (*path, key)))
        elif isinstance(node, list):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            stack.extend((child, depth + 1, (*path, i)) for i, child in enumerate(node) if not isinstance(child, _FINE))
        elif isinstance(node, _Unholdable):
            where = _path(path)
            shown = (
                node.text if len(node.text) <= 24 else f"{node.text[:10]}...{node.text[-6:]} ({len(node.text)} chars)"
            )
            raise ValidationError(
                f"{where}: {shown} cannot be used; numbers must be finite (no NaN or Infinity) and within ±1.8e308",
                details={"field": where},
            )


def storable_text(text: str) -> str:
    """``text`` with what PostgreSQL cannot store (U+0000, a lone surrogate) replaced by
    U+FFFD: for text that did not come through a request body, such as the message of
    an exception a task raised."""
    return _BAD_TEXT.sub("\ufffd", text) if _BAD_TEXT.search(text) else text


def unstorable_text(value: Any) -> str | None:
    """Where a JSON value (as ``json.loads`` makes it) holds text PostgreSQL cannot store,
    and what: ``"[2].k contains U+0000 (NUL), ..."``; None when it holds none."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _BAD_TEXT.search(node):
                return f"{storable_text(_path(path)) if path else 'it'} contains {_unstorable(node)}"
        elif isinstance(node, dict):
            for key, child in node.items():
                if _BAD_TEXT.search(key):
                    return f"the key {storable_text(_path((*path, key)))} contains {_unstorable(key)}"
                stack.append((child, (*path, key)))
        elif isinstance(node, list):
            stack.extend((child, (*path, i)) for i, child in enumerate(node))
    return None
