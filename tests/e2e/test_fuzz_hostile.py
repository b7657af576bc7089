"""Hostile inputs against a live stack over real HTTP (issue 12), next to schemathesis.

Schemathesis explores what the OpenAPI document describes; this fuzzer sends what
it cannot describe: absurd nesting, numbers JSON allows but Python or PostgreSQL
cannot hold, invalid Unicode (escaped and as raw bytes), malformed headers and
Content-Length values, crons that never fire, forged cursors, oversized names and
the wrong type in every field.  The invariants: never a 5xx, every error in the
documented shape ``{"error": {"code", "message", ...}}``, and afterwards the stack
is healthy and still runs a normal task.

The cases are explicit generators (deterministic, a few thousand requests at most)
plus a bounded hypothesis run of random JSON values in every field.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.core.jsonbody import MAX_DEPTH
from tests.helpers import wait_for
from tests.stack import Stack

BODY_ROUTES = [
    ("POST", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks/batch"),
    ("POST", "/api/v1/schedules"),
    ("PATCH", "/api/v1/schedules/{schedule_id}"),
    ("POST", "/api/v1/dead-letters/redrive"),
]
# A valid body per route; each case replaces one field of it.
VALID: dict[str, dict[str, Any]] = {
    "/api/v1/tasks": {"name": "noop", "payload": {"x": 1}, "idempotency_key": "k"},
    "/api/v1/tasks/batch": {"tasks": [{"name": "noop"}], "atomic": False},
    "/api/v1/schedules": {"name": "s", "cron": "0 3 * * *", "task": {"name": "noop"}},
    "/api/v1/schedules/{schedule_id}": {"name": "s2", "cron": "0 4 * * *"},
    "/api/v1/dead-letters/redrive": {"name": "noop", "limit": 5},
}
FIELDS: dict[str, list[str]] = {
    "/api/v1/tasks": [
        "name",
        "payload",
        "priority",
        "run_at",
        "delay_seconds",
        "max_retries",
        "timeout_seconds",
        "idempotency_key",
        "callback_url",
    ],
    "/api/v1/tasks/batch": ["tasks", "atomic"],
    "/api/v1/schedules": ["name", "cron", "timezone", "task", "enabled", "catch_up"],
    "/api/v1/schedules/{schedule_id}": ["name", "cron", "timezone", "task", "enabled", "catch_up"],
    "/api/v1/dead-letters/redrive": ["ids", "name", "limit"],
}
WRONG_VALUES: list[Any] = [None, True, False, 0, -1, 1.5, 2**63, -(2**63) - 1, "", "x", " ", [], {}, [1], {"a": 1}]
NEVER_FIRING = ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *", "0 0 31 6 *", "0 0 31 9,11 *"]
EVERY_SECOND = ["* * * * * *", "*/1 * * * * *", "0 * * * * 0,30"]
ODD_CRONS = [
    "",
    " ",
    "* * * *",
    "* * * * * * *",
    "61 * * * *",
    "* 25 * * *",
    "0 0 0 0 0",
    "*/0 * * * *",
    "0 0 L * *",
    "0 0 * * 5#6",
    "H * * * *",
    "@yearly",
    "@reboot",
    "0 0 29 2 *",
    "0 0 * * 8",
    "1-0 * * * *",
    "0-59/99999999999999999999 * * * *",
    "9" * 400 + " * * * *",
    "\x00 * * * *",
]
TIMEZONES = ["", "../../etc/passwd", "/etc/localtime", "UTC\x00", "a" * 1000, "Europe/Paris", "posixrules", "Factory"]
BAD_TEXT = ["\ud800", "a\udfffb", "\udbff\udc00"[::-1], "\x00", "nul\x00inside", "\ufffe", "\U0010ffff"]
HUGE_NUMBERS = [
    "1" + "0" * 308,
    "1" + "0" * 310,
    "1" + "0" * 5000,
    "-" + "9" * 400,
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "-0.0",
    "1.7976931348623157e308",
    "4.9e-324",
    "123456789012345678901234567890.5",
]


class Fuzz:
    """Sends requests and keeps every violation of the invariants, to report all at once."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.session = requests.Session()
        self.failures: list[str] = []
        self.sent = 0
        url = urlsplit(stack.base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80

    def check(self, what: str, status: int, body: bytes, content_type: str) -> None:
        self.sent += 1
        if status >= 500:
            self.failures.append(f"{what}: {status} {body[:300]!r}")
            return
        if status >= 400 and body:
            try:
                doc = json.loads(body)
                err = doc["error"]
                assert isinstance(err["code"], str) and err["code"]
                assert isinstance(err["message"], str) and err["message"]
                assert "json" in content_type
            except (ValueError, KeyError, TypeError, AssertionError):
                self.failures.append(f"{what}: {status} not the JSON error shape: {content_type} {body[:300]!r}")

    def send(self, method: str, path: str, data: bytes | str | None = None, **headers: str) -> requests.Response:
        hdrs = {"X-API-Key": self.stack.api_key, "Content-Type": "application/json", **headers}
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        r = self.session.request(method, self.stack.base_url + path, data=data, headers=hdrs, timeout=15)
        label = f"{method} {path} {(data or b'')[:120]!r} {dict(headers)!r:.200}"
        self.check(label, r.status_code, r.content, r.headers.get("Content-Type", ""))
        return r

    def raw(self, what: str, request: bytes) -> tuple[int, bytes]:
        """Send bytes as they are (requests would refuse or repair them); answer is required."""
        with socket.create_connection((self.host, self.port), timeout=15) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            self.sent += 1
            self.failures.append(f"{what}: connection closed without a response")
            return 0, b""
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        content_type = next(
            (
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-type:")
            ),
            "",
        )
        self.check(what, status, body, content_type)
        return status, body


@pytest.fixture(scope="module")
def fuzz(fuzz_stack: Stack) -> Iterator[Fuzz]:
    f = Fuzz(fuzz_stack)
    with f.session:
        yield f
    # The stack survived all of it: healthy, and a normal task still completes.
    assert fuzz_stack.get("/health").status_code == 200
    task = fuzz_stack.submit("noop", {"after": "fuzz"})
    wait_for(
        lambda: fuzz_stack.task(task["id"])["status"] == "COMPLETED",
        timeout=30,
        interval=0.05,
        message="a task submitted after the fuzzing to complete",
    )


@pytest.fixture
def schedule_id(fuzz_stack: Stack) -> str:
    """A schedule to PATCH (per test: the e2e conftest deletes schedules after each)."""
    r = fuzz_stack.post("/api/v1/schedules", {"name": "fuzz-target", "cron": "0 5 * * *", "task": {"name": "noop"}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _routes(schedule_id: str) -> Iterator[tuple[str, str, str]]:
    for method, template in BODY_ROUTES:
        yield method, template.format(schedule_id=schedule_id), template


def _assert_clean(fuzz: Fuzz) -> None:
    failures, fuzz.failures = fuzz.failures, []
    assert not failures, f"{len(failures)} of {fuzz.sent} requests broke an invariant:\n" + "\n".join(failures[:40])


def test_deep_nesting_is_a_400_everywhere(fuzz: Fuzz, schedule_id: str) -> None:
    for method, path, template in _routes(schedule_id):
        for depth in (MAX_DEPTH, MAX_DEPTH + 1, 990, 10_000, 100_000):
            for opener, closer in (("[", "]"), ('{"a":', "}")):
                fuzz.send(method, path, opener * depth + "1" + closer * depth)
        for depth in (990, 10_000):
            nested = "[" * depth + "]" * depth
            fuzz.send(method, path, json.dumps(VALID[template])[:-1] + f', "{FIELDS[template][0]}": {nested}}}')
    for depth in (MAX_DEPTH - 3, MAX_DEPTH, 990, 5_000):
        nested = "[" * depth + "]" * depth
        r = fuzz.send("POST", "/api/v1/tasks", f'{{"name": "noop", "payload": {{"deep": {nested}}}}}')
        # The body and its payload are two levels of the limit.
        assert r.status_code == (201 if depth + 2 <= MAX_DEPTH else 400), r.text
    _assert_clean(fuzz)


def test_huge_and_non_finite_numbers_are_400(fuzz: Fuzz, schedule_id: str) -> None:
    for number in HUGE_NUMBERS:
        for field in ("delay_seconds", "max_retries", "timeout_seconds", "priority"):
            fuzz.send("POST", "/api/v1/tasks", f'{{"name": "noop", "{field}": {number}}}')
        fuzz.send("POST", "/api/v1/tasks", f'{{"name": "noop", "payload": {{"n": {number}}}}}')
        fuzz.send("POST", "/api/v1/tasks", f'{{"name": "sleep", "payload": {{"seconds": {number}}}}}')
        fuzz.send("POST", "/api/v1/tasks/batch", f'{{"tasks": [{{"name": "noop", "max_retries": {number}}}]}}')
        fuzz.send("POST", "/api/v1/dead-letters/redrive", f'{{"name": "noop", "limit": {number}}}')
        fuzz.send(
            "POST",
            "/api/v1/schedules",
            f'{{"name": "n", "cron": "0 1 * * *", "task": {{"name": "noop", "timeout_seconds": {number}}}}}',
        )
        fuzz.send(
            "PATCH", f"/api/v1/schedules/{schedule_id}", f'{{"task": {{"name": "noop", "max_retries": {number}}}}}'
        )
    r = fuzz.send("POST", "/api/v1/tasks", '{"name":"noop","delay_seconds":1' + "0" * 310 + "}")
    assert r.status_code == 400 and "delay_seconds" in r.json()["error"]["message"], r.text
    _assert_clean(fuzz)


def test_invalid_unicode_in_every_text_field_is_400(fuzz: Fuzz, schedule_id: str) -> None:
    for method, path, template in _routes(schedule_id):
        for field in FIELDS[template]:
            for text in BAD_TEXT:
                fuzz.send(method, path, json.dumps({**VALID[template], field: text}))
        for text in BAD_TEXT:
            fuzz.send(method, path, json.dumps({**VALID[template], text: 1}))
    for text in BAD_TEXT[:5]:
        r = fuzz.send("POST", "/api/v1/tasks", json.dumps({"name": "noop", "idempotency_key": text}))
        assert r.status_code == 400, r.text
        fuzz.send("POST", "/api/v1/tasks", json.dumps({"name": "noop", "payload": {"k": [text]}}))
        fuzz.send("POST", "/api/v1/tasks/batch", json.dumps({"tasks": [{"name": "noop", "idempotency_key": text}]}))
        fuzz.send("POST", "/api/v1/schedules", json.dumps({**VALID["/api/v1/schedules"], "name": text}))
        fuzz.send(
            "POST",
            "/api/v1/tasks",
            b'{"name": "noop"}',
            **{"Idempotency-Key": text.encode("utf-8", "surrogatepass").decode("latin-1")},
        )
    # Raw bytes that are not UTF-8 (or are UTF-8 of a surrogate, CESU-style) inside a string.
    for bad in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x00"):
        for method, path, template in _routes(schedule_id):
            body = json.dumps({**VALID[template], FIELDS[template][0]: "@@"}).encode().replace(b"@@", bad)
            fuzz.send(method, path, body)
        fuzz.send("POST", "/api/v1/tasks", b'{"name": "noop", "idempotency_key": "' + bad + b'"}')
    for prefix in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        fuzz.send("POST", "/api/v1/tasks", prefix + b'{"name": "noop"}')
    fuzz.send("POST", "/api/v1/tasks", '{"name": "noop"}'.encode("utf-16"))
    fuzz.send("POST", "/api/v1/tasks", '{"name": "noop"}'.encode("utf-32-le"))
    _assert_clean(fuzz)


def test_wrong_types_in_every_field_are_4xx(fuzz: Fuzz, schedule_id: str) -> None:
    for method, path, template in _routes(schedule_id):
        for field in FIELDS[template]:
            for value in WRONG_VALUES:
                body = {**VALID[template], field: value}
                if template == "/api/v1/schedules":
                    body["name"] = f"wt-{uuid.uuid4().hex[:8]}"
                fuzz.send(method, path, json.dumps(body))
        for value in WRONG_VALUES:
            fuzz.send(method, path, json.dumps(value))
    task_fields = FIELDS["/api/v1/tasks"]
    for field in task_fields:
        for value in WRONG_VALUES:
            fuzz.send(
                "POST", "/api/v1/tasks/batch", json.dumps({"tasks": [{"name": "noop", field: value}], "atomic": True})
            )
            fuzz.send(
                "POST",
                "/api/v1/schedules",
                json.dumps({"name": "w", "cron": "0 1 * * *", "task": {"name": "noop", field: value}}),
            )
    for payload in ({"times": "x"}, {"seconds": -1}, {"seconds": 1e308}, {"to": 5}, {"url": "http://[::1"}, []):
        for name in ("fail", "sleep", "send-email", "send-sms", "http-request", "generate-pdf"):
            fuzz.send("POST", "/api/v1/tasks", json.dumps({"name": name, "payload": payload}))
    _assert_clean(fuzz)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    route=st.sampled_from(BODY_ROUTES),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    ),
    pick=st.integers(min_value=0, max_value=20),
)
def test_random_json_in_every_field_is_never_a_5xx(
    fuzz: Fuzz, schedule_id: str, route: tuple[str, str], value: Any, pick: int
) -> None:
    method, template = route
    fields = FIELDS[template]
    body = {**VALID[template], fields[pick % len(fields)]: value}
    if template == "/api/v1/schedules":
        body["name"] = f"h-{uuid.uuid4().hex[:8]}"
    fuzz.send(method, template.format(schedule_id=schedule_id), json.dumps(body))
    _assert_clean(fuzz)


def test_crons_that_never_fire_are_refused_and_every_second_is_accepted(fuzz: Fuzz, schedule_id: str) -> None:
    for cron in NEVER_FIRING:
        body = {"name": f"c-{uuid.uuid4().hex[:8]}", "cron": cron, "task": {"name": "noop"}}
        r = fuzz.send("POST", "/api/v1/schedules", json.dumps(body))
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "cron", (cron, r.text)
        assert "never fires" in r.json()["error"]["message"]
        r = fuzz.send("PATCH", f"/api/v1/schedules/{schedule_id}", json.dumps({"cron": cron}))
        assert r.status_code == 400, (cron, r.text)
    # Deliberately accepted (README, "Cron schedules"): each sweep fires the latest due tick.
    for cron in EVERY_SECOND:
        body = {"name": f"e-{uuid.uuid4().hex[:8]}", "cron": cron, "enabled": False, "task": {"name": "noop"}}
        r = fuzz.send("POST", "/api/v1/schedules", json.dumps(body))
        assert r.status_code == 201, (cron, r.text)
        fuzz.send("DELETE", f"/api/v1/schedules/{r.json()['id']}")
        r = fuzz.send("PATCH", f"/api/v1/schedules/{schedule_id}", json.dumps({"cron": cron, "enabled": False}))
        assert r.status_code == 200, (cron, r.text)
    for cron in ODD_CRONS:
        fuzz.send(
            "POST",
            "/api/v1/schedules",
            json.dumps({"name": f"o-{uuid.uuid4().hex[:8]}", "cron": cron, "task": {"name": "noop"}}),
        )
        fuzz.send("PATCH", f"/api/v1/schedules/{schedule_id}", json.dumps({"cron": cron}))
    for tz in TIMEZONES:
        body = {"name": f"t-{uuid.uuid4().hex[:8]}", "cron": "0 1 * * *", "timezone": tz, "task": {"name": "noop"}}
        fuzz.send("POST", "/api/v1/schedules", json.dumps(body))
        fuzz.send("PATCH", f"/api/v1/schedules/{schedule_id}", json.dumps({"timezone": tz}))
    assert fuzz.send("GET", f"/api/v1/schedules/{schedule_id}").status_code == 200
    assert fuzz.send("PATCH", f"/api/v1/schedules/{schedule_id}", '{"cron": "0 5 * * *"}').status_code == 200
    _assert_clean(fuzz)


def test_oversized_names_and_bodies_are_4xx(fuzz: Fuzz, schedule_id: str) -> None:
    for size in (201, 10_000, 200_000, 300_000):
        big = "x" * size
        fuzz.send("POST", "/api/v1/tasks", json.dumps({"name": big}))
        fuzz.send("POST", "/api/v1/tasks", json.dumps({"name": "noop", "idempotency_key": big}))
        fuzz.send("POST", "/api/v1/tasks", json.dumps({"name": "noop", "payload": {big: 1}}))
        fuzz.send("POST", "/api/v1/tasks", json.dumps({"name": "noop", "callback_url": "https://example.com/" + big}))
        fuzz.send("POST", "/api/v1/schedules", json.dumps({"name": big, "cron": "0 1 * * *", "task": {"name": "noop"}}))
        fuzz.send("PATCH", f"/api/v1/schedules/{schedule_id}", json.dumps({"name": big}))
        fuzz.send("POST", "/api/v1/dead-letters/redrive", json.dumps({"name": big}))
        fuzz.send("POST", "/api/v1/dead-letters/redrive", json.dumps({"ids": [big]}))
        fuzz.send("GET", "/api/v1/tasks?name=" + big[: min(size, 6000)])
        fuzz.send("GET", "/api/v1/tasks/" + big[: min(size, 6000)])
    r = fuzz.send(
        "POST", "/api/v1/schedules", json.dumps({"name": "n" * 201, "cron": "0 1 * * *", "task": {"name": "noop"}})
    )
    assert r.status_code == 400, r.text
    _assert_clean(fuzz)


def _cursor(text: str | bytes) -> str:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_forged_cursors_and_query_strings_are_4xx(fuzz: Fuzz) -> None:
    other = str(uuid.uuid4())
    cursors = [
        "!!!",
        "%%%",
        "a",
        "=" * 10,
        "x" * 5000,
        _cursor(b"\xff\xfe\x00garbage"),
        _cursor("garbage"),
        _cursor("|"),
        _cursor(f"2030-01-01T00:00:00+00:00|{other}"),
        _cursor(f"9999-12-31T23:59:59+00:00|{other}"),
        _cursor(f"0001-01-01T00:00:00-23:59|{other}"),
        _cursor(f"2030-01-01T00:00:00|{other}"),
        _cursor(f"2030-01-01\x00|{other}"),
        _cursor("\ud800|x"),
        _cursor(json.dumps({"id": other})),
    ]
    for path in ("/api/v1/tasks", "/api/v1/dead-letters"):
        for cursor in cursors:
            r = fuzz.send("GET", f"{path}?cursor={requests.utils.quote(cursor)}")
            assert r.status_code in (200, 400), (cursor, r.text)
            if r.status_code == 200:
                assert all(item["id"] != other for item in r.json()["items"])
        for query in (
            "limit=abc",
            "limit=1e3",
            "limit=" + "9" * 20,
            "limit=-1",
            "status=nope",
            "priority=%00",
            "name=%00",
            "name=%ED%A0%80",
            "name=%FF",
            "created_after=garbage",
            "created_after=9999-12-31T23:59:59-23:59",
            "created_before=0001-01-01T00:00:00%2B23:59",
            "unknown=1",
            "cursor=",
            "name=" + "x" * 3000,
        ):
            fuzz.send("GET", f"{path}?{query}")
    for path_id in ("%00", "%ED%A0%80", "%FF", "..%2F..", "x" * 3000, other):
        fuzz.send("GET", f"/api/v1/tasks/{path_id}")
        fuzz.send("POST", f"/api/v1/tasks/{path_id}/cancel")
        fuzz.send("PATCH", f"/api/v1/schedules/{path_id}", '{"name": "x"}')
    _assert_clean(fuzz)


def _request(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_malformed_headers_and_content_length_get_a_json_4xx(fuzz: Fuzz) -> None:
    key = fuzz.stack.api_key.encode()
    body = b'{"name": "noop"}'
    json_type = (b"Content-Type", b"application/json")
    for length in (b"abc", b"1e3", b"9" * 20, b"-1", b"-0", b" ", b"0x10", b"1_0", b"\xff", b"16, 16"):
        for path in ("/api/v1/tasks", "/health"):
            what = f"Content-Length {length!r} on {path}"
            status, _ = fuzz.raw(
                what, _request("POST", path, [(b"X-API-Key", key), json_type, (b"Content-Length", length)], body)
            )
            assert 400 <= status < 500, what
    status, _ = fuzz.raw(
        "two Content-Lengths",
        _request(
            "POST",
            "/api/v1/tasks",
            [(b"X-API-Key", key), json_type, (b"Content-Length", b"16"), (b"Content-Length", b"3")],
            body,
        ),
    )
    assert status == 400
    status, _ = fuzz.raw(
        "Content-Length above the limit",
        _request("POST", "/api/v1/tasks", [(b"X-API-Key", key), json_type, (b"Content-Length", b"99999999")], body),
    )
    assert status == 413
    for api_key in (b"\xe9t\xe9", "clé".encode(), b"\xff" * 50, b"tl_" + b"\x80" * 43, b"x" * 10_000, b"a\tb", b""):
        fuzz.raw(
            f"X-API-Key {api_key[:20]!r}",
            _request("POST", "/api/v1/tasks", [(b"X-API-Key", api_key), json_type, (b"Content-Length", b"16")], body),
        )
        fuzz.raw(f"GET X-API-Key {api_key[:20]!r}", _request("GET", "/api/v1/tasks", [(b"X-API-Key", api_key)]))
    fuzz.raw("huge header", _request("GET", "/api/v1/tasks", [(b"X-API-Key", key), (b"X-Big", b"b" * 70_000)]))
    fuzz.raw(
        "many headers",
        _request("GET", "/api/v1/tasks", [(b"X-API-Key", key)] + [(b"X-H%d" % i, b"v") for i in range(150)]),
    )
    fuzz.raw("huge request line", _request("GET", "/api/v1/tasks?" + "a" * 70_000, [(b"X-API-Key", key)]))
    fuzz.raw("bad request line", b"GARBAGE\r\n\r\n")
    fuzz.raw("bad version", b"GET /health HTTP/9.9\r\n\r\n")
    fuzz.raw(
        "header without colon",
        _request("GET", "/api/v1/tasks", [(b"X-API-Key", key), (b"NoColonHere", b"")]).replace(
            b"NoColonHere: ", b"NoColonHere"
        ),
    )
    for idem in (b"\xff\xfe", b"k" * 5000, b"\xed\xa0\x80"):
        fuzz.raw(
            f"Idempotency-Key {idem[:20]!r}",
            _request(
                "POST",
                "/api/v1/tasks",
                [(b"X-API-Key", key), json_type, (b"Idempotency-Key", idem), (b"Content-Length", b"16")],
                body,
            ),
        )
    for content_type in (b"application/json; charset=utf-16", b"\xff", b"application/json" + b"x" * 5000):
        fuzz.raw(
            f"Content-Type {content_type[:30]!r}",
            _request(
                "POST",
                "/api/v1/tasks",
                [(b"X-API-Key", key), (b"Content-Type", content_type), (b"Content-Length", b"16")],
                body,
            ),
        )
    _assert_clean(fuzz)
