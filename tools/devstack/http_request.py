"""The local API server's HTTP/1.1 request head parser: what ``http.server``'s
``parse_request`` does, without ``email.feedparser`` (~200k instructions a request,
a tenth of the server's work for a submit).

It keeps ``http.server``'s answers for what it accepts: the request line's rules and
limits (65,536 bytes a line, 100 header lines), header values decoded as ISO-8859-1
with leading blanks dropped, and the headers the Lambda event gets built from shaped
as ``dict(http.server's headers)``: every name as sent, each holding the first value
sent under that name in any case.  It is stricter than the email parser where that
parser guessed: a header line without a colon, a name with blanks or control bytes,
and an obsolete folded continuation line are a 400 (the email parser took such a line
as the start of the body and dropped the headers after it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

MAX_LINE = 65536  # http.server's and http.client's limit for the request line and each header line
MAX_HEADERS = 100  # http.client's _MAXHEADERS
# Headers whose two different values make a request ambiguous: the app reads one
# value (this server passes the first, API Gateway the last), a proxy in front may
# have judged the other.  Refused, as the app refuses them behind API Gateway
# (``chalicelib.api.access.single_header``).
SINGLE_VALUED = frozenset({"x-api-key", "idempotency-key", "authorization", "content-type"})
_VERSION = re.compile(r"HTTP/([0-9]{1,10})\.([0-9]{1,10})")
# A field name is a token; the email parser took any printable ASCII but the colon.
_NAME = re.compile(r"[!-9;-~]+")
_END = (b"\r\n", b"\n", b"")


class LineReader(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class Refused(Exception):
    """A request the server answers with a JSON error (status, message) and then closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class RequestHead:
    method: str
    path: str
    version: str
    requestline: str
    headers: dict[str, str]  # dict(http.server's headers): names as sent, the first value of each
    first: dict[str, str]  # the first value under each lower-case name
    content_lengths: list[str]  # every Content-Length value, in order
    keep_alive: bool  # what the version and the Connection header say


def read_request_line(rfile: LineReader) -> tuple[str, str, str, bool] | None:
    """(method, path, version, keep_alive) from the next request line, or None when the
    client closed the connection (or sent an empty line: ``http.server`` closes then too)."""
    raw = rfile.readline(MAX_LINE + 1)
    if len(raw) > MAX_LINE:
        raise Refused(414, "Request-URI Too Long")
    line = str(raw, "iso-8859-1").rstrip("\r\n")
    words = line.split()
    if not words:
        return None
    if len(words) != 3:
        # Two words is an HTTP/0.9 request, which gets no status line or headers back;
        # nothing speaks it any more, and a JSON error needs a status line.
        raise Refused(400, f"Bad request syntax ({line!r})")
    method, path, version = words
    found = _VERSION.fullmatch(version)
    if found is None:
        raise Refused(400, f"Bad request version ({version!r})")
    number = int(found[1]), int(found[2])
    if number >= (2, 0):
        raise Refused(400, f"Invalid HTTP version ({version[5:]})")
    if path.startswith("//"):
        path = "/" + path.lstrip("/")  # gh-87389, as http.server: '//host' reads as an absolute URI
    return method, path, version, number >= (1, 1)


def read_head(rfile: LineReader) -> RequestHead | None:
    """The next request's line and headers (not its body), or None at the end of the
    connection.  Raises ``Refused`` for what ``http.server`` (or this parser) refuses."""
    first_line = read_request_line(rfile)
    if first_line is None:
        return None
    method, path, version, keep_alive = first_line
    headers: dict[str, str] = {}
    first: dict[str, str] = {}
    lengths: list[str] = []
    count = 0
    while True:
        raw = rfile.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            raise Refused(431, "Line too long")
        if raw in _END:
            break
        count += 1
        if count > MAX_HEADERS:
            raise Refused(431, "Too many headers")
        line = str(raw, "iso-8859-1").rstrip("\r\n")
        name, colon, value = line.partition(":")
        if not colon or _NAME.fullmatch(name) is None:
            raise Refused(400, f"Bad header line ({line[:60]!r})")
        value = value.lstrip(" \t")
        low = name.lower()
        known = first.setdefault(low, value)
        if known != value and low in SINGLE_VALUED:
            raise Refused(400, f"conflicting {name} headers; send one")
        headers.setdefault(name, known)
        if low == "content-length":
            lengths.append(value)
    connection = first.get("connection", "").lower()
    if connection == "close":
        keep_alive = False
    elif connection == "keep-alive":
        keep_alive = True
    return RequestHead(method, path, version, f"{method} {path} {version}", headers, first, lengths, keep_alive)
