"""The local API server's request head parser (``tools.devstack.http_request``) reads
what ``http.server`` accepts as ``http.server`` does, and refuses the rest."""

from __future__ import annotations

import http.client
import io

import pytest

from tools.devstack.http_request import MAX_HEADERS, MAX_LINE, Refused, read_head

HEADS = [
    b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n",
    b"GET /health HTTP/1.0\r\n\r\n",
    b"GET /a?b=c HTTP/1.1\nX-Key:\tv  \nx-key: second\nX-KEY: third\n\n",
    b"GET / HTTP/1.1\r\nX-Latin: \xe9t\xe9\xff\r\nEmpty:\r\nA: b: c\r\n\r\n",
    b"PATCH /api/v1/schedules/1 HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\n",
]


@pytest.mark.parametrize("raw", HEADS)
def test_headers_are_shaped_as_dict_of_http_servers(raw: bytes) -> None:
    head = read_head(io.BytesIO(raw))
    assert head is not None
    expected = io.BytesIO(raw)
    expected.readline()
    message = http.client.parse_headers(expected)
    assert head.headers == dict(message)
    assert list(head.headers) == list(dict(message))
    assert head.content_lengths == (message.get_all("Content-Length") or [])
    assert head.requestline == raw.split(b"\n", 1)[0].decode("latin-1").strip()


def test_request_line_and_keep_alive() -> None:
    head = read_head(io.BytesIO(b"POST //evil/path HTTP/1.1\r\n\r\n"))
    assert head is not None
    assert (head.method, head.path, head.version, head.keep_alive) == ("POST", "/evil/path", "HTTP/1.1", True)
    for raw, keep in [
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
    ]:
        parsed = read_head(io.BytesIO(raw))
        assert parsed is not None and parsed.keep_alive is keep, raw


def test_a_closed_connection_or_an_empty_line_is_no_request() -> None:
    assert read_head(io.BytesIO(b"")) is None
    assert read_head(io.BytesIO(b"\r\n")) is None


def test_two_requests_on_one_connection_are_read_one_after_the_other() -> None:
    stream = io.BytesIO(b"GET /a HTTP/1.1\r\nX: 1\r\n\r\nGET /b HTTP/1.1\r\nX: 2\r\n\r\n")
    first, second = read_head(stream), read_head(stream)
    assert first is not None and second is not None
    assert (first.path, first.headers, second.path, second.headers) == ("/a", {"X": "1"}, "/b", {"X": "2"})


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /health\r\n\r\n", 400),  # HTTP/0.9
        (b"GET / x HTTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/9.9\r\n\r\n", 400),
        (b"GET /health HTTP/2.0\r\n\r\n", 400),
        (b"GET /health HTTP/1\r\n\r\n", 400),
        (b"GET /health FTP/1.1\r\n\r\n", 400),
        (b"GET /?" + b"a" * MAX_LINE + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * MAX_LINE + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n: no name\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        # The app would read one key, a proxy in front may have judged the other.
        (b"GET / HTTP/1.1\r\nX-API-Key: a\r\nx-api-key: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\n\r\n", 400),
    ],
)
def test_what_is_refused(raw: bytes, status: int) -> None:
    with pytest.raises(Refused) as refused:
        read_head(io.BytesIO(raw))
    assert refused.value.status == status


def test_exactly_the_limits_are_accepted() -> None:
    head = read_head(io.BytesIO(b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * MAX_HEADERS + b"\r\n"))
    assert head is not None and head.headers == {"X": "v"}


def test_a_single_valued_header_sent_twice_alike_is_read() -> None:
    head = read_head(io.BytesIO(b"GET / HTTP/1.1\r\nX-API-Key: k\r\nX-API-Key: k\r\n\r\n"))
    assert head is not None and head.headers == {"X-API-Key": "k"}
