"""The trace context of a task: X-Ray and W3C headers parsed strictly, fresh roots
generated in X-Ray's format, and what the drainer's attempt and outbound calls carry."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from chalicelib.core.ids import new_ids
from chalicelib.core.tracecontext import (
    MAX_HEADER,
    TraceContext,
    from_headers,
    new_root,
    new_root_headers,
    parse_amzn,
    parse_traceparent,
    stored,
)
from chalicelib.tasktypes.context import TaskContext
from tests.helpers import wait_for

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
PARENT = "53995c3f42cd8ad8"
ROOT_RE = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")


class Headers(dict[str, str]):
    """Case-insensitive lookups, as Chalice's request headers do."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        for k, v in self.items():
            if k.lower() == key.lower():
                return v
        return default


def test_new_root_is_xray_format_with_the_epoch_and_never_repeats() -> None:
    roots = {new_root().root for _ in range(1000)}
    assert len(roots) == 1000 and all(ROOT_RE.match(r) for r in roots)
    fixed = new_root(now=0x5759E988)
    assert fixed.root.startswith("1-5759e988-") and fixed.parent is None and fixed.sampled is None
    assert abs(int(new_root().root[2:10], 16) - time.time()) < 5


def test_amzn_header_round_trips_and_drops_unknown_fields() -> None:
    header = f"Root={ROOT};Parent={PARENT};Sampled=1"
    trace = parse_amzn(header)
    assert trace == TraceContext(ROOT, PARENT, True)
    assert trace is not None and trace.header() == header and trace.trace_id == ROOT
    assert parse_amzn(f"Root={ROOT}") == TraceContext(ROOT)
    assert parse_amzn(f"Root={ROOT};Sampled=?") == TraceContext(ROOT, None, None)
    assert parse_amzn(f"Self=1-5759e988-000000000000000000000001;Root={ROOT};Lineage=a:1") == TraceContext(ROOT)
    assert parse_amzn(f" Root={ROOT} ; Parent={PARENT} ") == TraceContext(ROOT, PARENT)


@pytest.mark.parametrize(
    "hostile",
    [
        None,
        "",
        "garbage",
        "Root=",
        f"root={ROOT}",  # field names are case-sensitive
        f"Parent={PARENT}",  # no Root
        "Root=1-5759E988-BD862E3FE1BE46A994272793",  # upper-case hex
        "Root=2-5759e988-bd862e3fe1be46a994272793",  # unknown version
        "Root=1-5759e988-bd862e3fe1be46a99427279",  # one digit short
        f"Root={ROOT}x",
        f"Root={ROOT};Root={ROOT}",  # a field twice
        f"Root={ROOT};Parent=xyz",
        f"Root={ROOT};Parent=0000000000000000",
        f"Root={ROOT};Sampled=2",
        f"Root={ROOT};Parent={PARENT}\r\nX-Evil: 1",  # header injection
        f"Root={ROOT};Parent={PARENT};Sampled=1\n",
        f"Root={ROOT};Lineage=" + "a" * MAX_HEADER,  # too long
        f"Root={ROOT};Self=é",  # not ASCII
        f"Root={ROOT};;",
        f"Root={ROOT};noequals",
        f"Root={ROOT}\x00",
    ],
)
def test_malformed_amzn_headers_are_ignored(hostile: str | None) -> None:
    assert parse_amzn(hostile) is None


def test_traceparent_maps_onto_the_xray_ids() -> None:
    trace = parse_traceparent(f"00-5759e988bd862e3fe1be46a994272793-{PARENT}-01")
    assert trace == TraceContext(ROOT, PARENT, True)
    assert parse_traceparent(f"00-5759e988bd862e3fe1be46a994272793-{PARENT}-00") == TraceContext(ROOT, PARENT, False)
    # A future version may append fields; its known prefix is still read.
    assert parse_traceparent(f"01-5759e988bd862e3fe1be46a994272793-{PARENT}-01-extra") == TraceContext(
        ROOT, PARENT, True
    )
    assert trace is not None and trace.traceparent() == f"00-5759e988bd862e3fe1be46a994272793-{PARENT}-01"


@pytest.mark.parametrize(
    "hostile",
    [
        None,
        "",
        "00-abc-def-01",
        f"00-00000000000000000000000000000000-{PARENT}-01",  # all-zero trace id
        "00-5759e988bd862e3fe1be46a994272793-0000000000000000-01",  # all-zero span id
        f"ff-5759e988bd862e3fe1be46a994272793-{PARENT}-01",  # forbidden version
        f"00-5759e988bd862e3fe1be46a994272793-{PARENT}-01-extra",  # version 00 has no more fields
        f"00-5759E988BD862E3FE1BE46A994272793-{PARENT}-01",
        f"00_5759e988bd862e3fe1be46a994272793_{PARENT}_01",
        f"01-5759e988bd862e3fe1be46a994272793-{PARENT}-01extra",
        f"00-5759e988bd862e3fe1be46a994272793-{PARENT}-0g",
        f"00-5759e988bd862e3fe1be46a994272793-{PARENT}-01" + "\n",
        "x" * 10_000,
    ],
)
def test_malformed_traceparents_are_ignored(hostile: str | None) -> None:
    assert parse_traceparent(hostile) is None


def test_request_trace_prefers_amzn_then_traceparent_then_lambda_then_fresh() -> None:
    amzn = f"Root={ROOT};Parent={PARENT};Sampled=1"
    other = "00-11111111222222223333333344444444-1111111111111111-01"
    lambda_env = "Root=1-aaaaaaaa-bbbbbbbbbbbbbbbbbbbbbbbb;Parent=cccccccccccccccc;Sampled=1"
    assert from_headers(Headers({"x-amzn-trace-id": amzn, "traceparent": other}), lambda_env).root == ROOT
    assert from_headers(Headers({"X-Amzn-Trace-Id": "junk", "TraceParent": other})).root == (
        "1-11111111-222222223333333344444444"
    )
    assert from_headers(Headers({"X-Amzn-Trace-Id": "junk"}), lambda_env).root == "1-aaaaaaaa-bbbbbbbbbbbbbbbbbbbbbbbb"
    fresh = from_headers(Headers({"X-Amzn-Trace-Id": "Root=evil", "traceparent": "evil"}), "evil")
    assert ROOT_RE.match(fresh.root) and fresh.parent is None


def test_stored_form_is_the_amzn_header() -> None:
    trace = TraceContext(ROOT, PARENT, True).child("1234567890abcdef")
    assert stored(trace.header()) == trace and trace.parent == "1234567890abcdef"
    assert stored(None) is None and stored("Root=nope") is None


def test_task_context_exposes_the_trace_header_for_outbound_calls() -> None:
    ctx = TaskContext("t", "noop", "acme", 1, 3, 5.0, trace_context=f"Root={ROOT};Parent={PARENT};Sampled=1")
    assert ctx.trace_id == ROOT
    assert ctx.trace_header == f"Root={ROOT};Parent={PARENT};Sampled=1"
    headers = ctx.trace_headers()
    assert headers["X-Amzn-Trace-Id"] == ctx.trace_header
    assert headers["traceparent"] == f"00-5759e988bd862e3fe1be46a994272793-{PARENT}-01"
    bare = TaskContext("t", "noop", "acme", 1, 3, 5.0)
    assert bare.trace_id is None and bare.trace_header is None and bare.trace_headers() == {}


def test_unsampled_or_undecided_traces_render_a_valid_traceparent() -> None:
    undecided = TraceContext(ROOT)
    value = undecided.traceparent()
    assert re.fullmatch(r"00-5759e988bd862e3fe1be46a994272793-[0-9a-f]{16}-00", value)
    assert parse_traceparent(value) is not None


def test_bulk_roots_and_task_ids_have_the_single_forms() -> None:
    headers = new_root_headers(300)
    assert len(set(headers)) == 300
    for h in headers:
        parsed = parse_amzn(h)
        assert parsed is not None and parsed.header() == h and parsed.parent is None
    before = time.time_ns() // 1_000_000
    ids = new_ids(2000)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after  # the first 48 bits: the Unix time in ms
    # Time-ordered: a later call's ids sort after an earlier call's.
    wait_for(lambda: time.time_ns() // 1_000_000 > after)
    assert min(new_ids(50)) > max(ids)


@pytest.mark.parametrize(
    "value",
    [
        f"Root={ROOT}",
        f"Root={ROOT};Parent={PARENT}",
        f"Root={ROOT};Sampled=0",
        f"Root={ROOT};Parent={PARENT};Sampled=1",
        f"Root={ROOT};Parent={PARENT};Sampled=?",
    ],
)
def test_the_stored_form_reads_as_the_same_fields_in_any_order(value: str) -> None:
    # The form a task row stores is read by one match; any other order, or an extra
    # field, goes field by field: both must agree.
    reordered = ";".join(reversed(value.split(";")))
    assert parse_amzn(value) == parse_amzn(reordered) == parse_amzn(f"{value};Lineage=a:1")
    assert parse_amzn(value) is not None
