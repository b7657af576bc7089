"""A task's trace context: parsed, generated and rendered in X-Ray's and W3C's forms.

A task is one trace from submit to outcome.  The API takes the trace context from
the request (``X-Amzn-Trace-Id``, then W3C ``traceparent``, then the Lambda's
``_X_AMZN_TRACE_ID``), else starts a fresh root, and stores it on the task row in
X-Ray header form (``Root=1-...;Parent=...;Sampled=1``).  The drainer, the executor
function and outbound calls read it back from there.

Headers come from clients, so parsing is strict: anything that is not exactly the
documented grammar (or is longer than ``MAX_HEADER``) is ignored and a fresh root
is used instead; it never fails a request.

X-Ray ids and W3C ids are the same bits: the W3C 32-hex trace id is X-Ray's
``1-<8 hex epoch>-<24 hex>`` without the dashes, and both parent ids are 16 hex.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.core.ids import random_hex

MAX_HEADER = 256  # also the bound of the tasks.trace_context column
AMZN_HEADER = "X-Amzn-Trace-Id"
W3C_HEADER = "traceparent"

_ROOT = re.compile(r"1-[0-9a-f]{8}-[0-9a-f]{24}")
_SPAN = re.compile(r"[0-9a-f]{16}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_STORED_ROOT = re.compile(r"Root=(1-[0-9a-f]{8}-[0-9a-f]{24})(?:;|$)")
# The form ``TraceContext.header`` writes (what a task row stores): read by one match.
_CANONICAL = re.compile(r"Root=(1-[0-9a-f]{8}-[0-9a-f]{24})(?:;Parent=([0-9a-f]{16}))?(?:;Sampled=([01?]))?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A trace id in X-Ray form (``root``), the calling span (``parent``) if known, and
    the sampling decision (None: not decided, the receiver decides)."""

    root: str
    parent: str | None = None
    sampled: bool | None = None

    @property
    def trace_id(self) -> str:
        return self.root

    def header(self) -> str:
        """The ``X-Amzn-Trace-Id`` value (also the stored form)."""
        text = f"Root={self.root}"
        if self.parent is not None:
            text += f";Parent={self.parent}"
        if self.sampled is not None:
            text += f";Sampled={int(self.sampled)}"
        return text

    def traceparent(self, span: str | None = None) -> str:
        """The W3C ``traceparent`` value for a call made from ``span`` (default: the
        parent, else a new span id, since W3C requires one)."""
        trace = self.root[2:].replace("-", "")
        parent = span or self.parent or new_span_id()
        return f"00-{trace}-{parent}-{'01' if self.sampled else '00'}"

    def child(self, span: str) -> TraceContext:
        """The same trace, called from ``span``."""
        return TraceContext(self.root, span, self.sampled)

    def outbound_headers(self) -> dict[str, str]:
        """Both headers for an outbound HTTP call."""
        return {AMZN_HEADER: self.header(), W3C_HEADER: self.traceparent()}


def new_root(now: float | None = None) -> TraceContext:
    """A fresh X-Ray root: ``1-<epoch seconds, 8 hex>-<96 random bits, 24 hex>``."""
    epoch = int(time.time() if now is None else now) & 0xFFFFFFFF
    return TraceContext(f"1-{epoch:08x}-{random_hex(24)}")


def new_root_headers(count: int) -> list[str]:
    """``count`` fresh roots in their stored form (``new_root().header()`` each), for a
    bulk submit: one clock read and one draw of randomness for all of them."""
    epoch = int(time.time()) & 0xFFFFFFFF
    text = random_hex(24 * count)
    return [f"Root=1-{epoch:08x}-{text[i : i + 24]}" for i in range(0, 24 * count, 24)]


def new_span_id() -> str:
    return random_hex(16)


def parse_amzn(value: str | None) -> TraceContext | None:
    """An ``X-Amzn-Trace-Id`` value, or None unless it is well formed.

    ``Root`` is required; ``Parent`` and ``Sampled`` are optional; other fields
    (``Self``, ``Lineage``...) are allowed and dropped.  A field given twice, an
    upper-case hex digit or a stray character makes the whole value invalid."""
    if type(value) is str and (canonical := _CANONICAL.fullmatch(value)) is not None:
        # What the field-by-field reading below gives for this form, a fifth of its cost
        # (every task the API presents has its trace id read back from it).
        root, parent, sampled = canonical.groups()
        if parent != _ZERO_SPAN:
            return TraceContext(root, parent, None if sampled in (None, "?") else sampled == "1")
    if not isinstance(value, str) or not value or len(value) > MAX_HEADER or not _printable_ascii(value):
        return None
    fields: dict[str, str] = {}
    for part in value.strip().split(";"):
        key, eq, val = part.strip().partition("=")
        if not eq or not key or key in fields:
            return None
        fields[key] = val
    root = fields.get("Root", "")
    if _ROOT.fullmatch(root) is None:
        return None
    parent = fields.get("Parent")
    if parent is not None and (_SPAN.fullmatch(parent) is None or parent == _ZERO_SPAN):
        return None
    sampled = fields.get("Sampled")
    if sampled is not None and sampled not in ("0", "1", "?"):
        return None
    return TraceContext(root, parent, None if sampled in (None, "?") else sampled == "1")


def parse_traceparent(value: str | None) -> TraceContext | None:
    """A W3C ``traceparent`` value, or None unless it is well formed: version 00 exactly
    as specified (a future version may append fields after a dash), no all-zero ids,
    lower-case hex."""
    if not isinstance(value, str) or not value or len(value) > MAX_HEADER or not _printable_ascii(value):
        return None
    text = value.strip()
    match = _TRACEPARENT.match(text)
    if match is None:
        return None
    version, trace, span, flags = match.groups()
    rest = text[match.end() :]
    if version == "ff" or (version == "00" and rest) or (rest and not rest.startswith("-")):
        return None
    if trace == _ZERO_TRACE or span == _ZERO_SPAN:
        return None
    return TraceContext(f"1-{trace[:8]}-{trace[8:]}", span, bool(int(flags, 16) & 1))


def from_headers(headers: Mapping[str, str], lambda_env: str | None = None) -> TraceContext:
    """The request's trace context: a valid ``X-Amzn-Trace-Id`` header, else a valid
    ``traceparent``, else the Lambda's own (``_X_AMZN_TRACE_ID``), else a fresh root.
    ``headers`` must look names up case-insensitively (Chalice's do)."""
    return (
        parse_amzn(headers.get(AMZN_HEADER))
        or parse_traceparent(headers.get(W3C_HEADER))
        or parse_amzn(lambda_env)
        or new_root()
    )


def root_of(value: str | None) -> str | None:
    """The trace id of a stored trace context, without parsing the rest (the drainer
    does this once per attempt, for the log lines: one anchored match)."""
    if not value:
        return None
    match = _STORED_ROOT.match(value)
    return match.group(1) if match is not None else None


def stored(value: str | None) -> TraceContext | None:
    """A trace context read back from a task row or an executor event (None if absent
    or not valid: an old row, a hand-made event)."""
    return parse_amzn(value)


def _printable_ascii(value: str) -> bool:
    """No control characters (a CR/LF would split a header we forward), nothing non-ASCII."""
    return value.isascii() and value.isprintable()
