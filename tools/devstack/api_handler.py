"""The local API server's request handler: ``chalice local``'s, on a lean HTTP/1.1
layer, hardened to answer like API Gateway where the dev server would not.

Each request becomes the same API Gateway proxy event, through the same
``LocalGateway.handle_request``, and the same response bytes, as with chalice's
``ChaliceRequestHandler`` on ``http.server``; what differs is the work around it
(round 5 of issue 14: ~650k instructions a request were the HTTP layer's):

- the request head is read by ``http_request.read_head`` instead of ``http.server``'s
  ``parse_request`` and ``email.feedparser``;
- the response goes out in one write, its Date header formatted once a second;
- the access log line (``http.server`` writes one to stderr per request) is written
  only when ``TASKLANE_LOG_LEVEL`` is INFO or DEBUG; refusals are always logged.

Hardening (unchanged): methods the dev server does not know (TRACE, CONNECT, ...) get a
JSON 405; a Content-Length that is not a plain non-negative number (``abc``, ``1e3``,
``-1``, two different values) is a JSON 400, one above the body limit a 413 answered
without reading the body (chalice's handler called ``int()`` on it unguarded, and the
exception dropped the connection); whatever the parser refuses (a malformed request
line, an over-long header or too many of them, an unknown HTTP version) is answered
in the same JSON error shape, as a 4xx, and the connection closed.  A path or method no
route serves is a JSON 404, as API Gateway answers it with this stack's template.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import socketserver
import sys
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, cast

from tools.devstack.http_request import Refused, RequestHead, read_head

if TYPE_CHECKING:
    from chalice.local import LocalGatewayException

_DIGITS = re.compile("[0-9]{1,15}")
_CODES = {
    400: "validation_error",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
}
# The methods chalice's handler serves (its do_* methods); others get a JSON 405.
METHODS = frozenset({"GET", "PUT", "POST", "HEAD", "DELETE", "PATCH", "OPTIONS"})
_PHRASES = {code: short for code, (short, _) in BaseHTTPRequestHandler.responses.items()}
SERVER_HEADER = f"Server: {BaseHTTPRequestHandler.server_version} {BaseHTTPRequestHandler.sys_version}\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# A path no route serves: chalice's gateway answers a 403 "Missing Authentication
# Token", as API Gateway does; both answer this 404 instead (API Gateway through the
# MISSING_AUTHENTICATION_TOKEN response of infra/app-overrides.json).  With an
# Authorization header both answer a 403 about its signature instead, which API
# Gateway's DEFAULT_4XX response puts in the error shape: so does this server.
NO_ROUTE = "no such route: check the method and the path (GET /openapi.json lists them)"
_MISSING_TOKEN = b'{"message": "Missing Authentication Token"}'
# chalice's message embeds the header's value unescaped (not always JSON): not kept.
NOT_SIGNED = "no route here; an Authorization header is read as an AWS signature, which this one is not"


class _Clock:
    """The Date header's value, formatted once a second rather than once a request."""

    second = -1
    value = ""

    @classmethod
    def date(cls) -> str:
        now = time.time()
        if int(now) != cls.second:
            cls.value, cls.second = formatdate(now, usegmt=True), int(now)
        return cls.value


_REMEMBERED_URLS = 1024  # distinct URLs without a query string: an API's paths, unless a client walks ids


class RememberingMatcher:
    """chalice's ``RouteMatcher`` with its answer remembered per URL.  Its
    ``match_route`` is a pure function of the URL, but splits and compares every route
    on every request (~100k instructions for a submit, ~4 % of the server's work);
    URLs with a query string (cursors, filters) are matched afresh each time."""

    def __init__(self, matcher: Any) -> None:
        self._matcher = matcher
        self._known: dict[str, Any] = {}

    def match_route(self, url: str) -> Any:
        found = self._known.get(url)
        if found is None:
            found = self._matcher.match_route(url)  # ValueError for an unknown path: not remembered
            if "?" in url:
                return found
            if len(self._known) >= _REMEMBERED_URLS:
                self._known.clear()
            self._known[url] = found
        # Copies: the event's pathParameters and query parameters are the request's own.
        return type(found)(found.route, dict(found.captured), {k: list(v) for k, v in found.query_params.items()})


def content_length(head: RequestHead, max_body_bytes: int) -> int:
    """The body's length from the Content-Length headers (0 without one), or ``Refused``."""
    values = {v.strip() for v in head.content_lengths}
    if not values:
        return 0
    if len(values) > 1:
        raise Refused(400, "conflicting Content-Length headers")
    value = values.pop()
    if not _DIGITS.fullmatch(value):
        raise Refused(400, f"Content-Length must be a non-negative integer, got {value[:40]!r}")
    length = int(value)
    if length > max_body_bytes:
        raise Refused(413, f"the request body is {length} bytes; the limit is {max_body_bytes}")
    return length


class ApiHandler(socketserver.StreamRequestHandler):
    """One keep-alive connection: requests in, chalice's local gateway, responses out.
    ``make_handler`` sets the class attributes."""

    gateway: Any  # chalice.local.LocalGateway
    # chalice.local.LocalGatewayException, set with the gateway: imported in ``_serve``
    # it cost a failed ``__path__`` lookup per request (Python 3.11's ``from`` import).
    gateway_error: type[LocalGatewayException]
    routes: dict[str, Any]
    matcher: RememberingMatcher
    max_body_bytes: int
    access_log: bool
    # Headers and body go out in one write, but a 100 Continue and its answer do not;
    # with Nagle's algorithm on, the client's delayed ACK would add ~40 ms.
    disable_nagle_algorithm = True
    close_connection = True
    requestline = ""
    command = ""

    def handle(self) -> None:
        self.close_connection = False
        while not self.close_connection:
            self._handle_one()

    def _handle_one(self) -> None:
        self.command = ""
        try:
            head = read_head(self.rfile)
        except Refused as refused:
            self._refuse(refused)
            return
        if head is None:
            self.close_connection = True
            return
        self.requestline, self.command = head.requestline, head.method
        self.close_connection = not head.keep_alive
        if head.version >= "HTTP/1.1" and head.first.get("expect", "").lower() == "100-continue":
            self._log_request(100)
            self.request.sendall(_CONTINUE)
        if head.method not in METHODS:
            self._method_not_allowed(head)
            return
        try:
            length = content_length(head, self.max_body_bytes)
        except Refused as refused:
            self._refuse(refused)  # the body (if any) was not read
            return
        body = self.rfile.read(length) if length > 0 else None
        self._serve(head, body)

    def _serve(self, head: RequestHead, body: bytes | None) -> None:
        """``ChaliceRequestHandler._generic_handle``: the gateway's answer, or its error."""
        try:
            response = self.gateway.handle_request(method=head.method, path=head.path, headers=head.headers, body=body)
        except self.gateway_error as error:
            if error.CODE == 403 and error.body == _MISSING_TOKEN:
                self._json_error(404, NO_ROUTE)
                return
            if error.CODE == 403:  # the Authorization header's signature: see NO_ROUTE
                self._json_error(403, NOT_SIGNED, code="request_refused")
                return
            self._send(error.CODE, error.headers, error.body)
            return
        headers = response["headers"].copy()
        headers.update(response["multiValueHeaders"])
        out = response["body"]
        if response.get("isBase64Encoded"):
            out = base64.b64decode(out)
        self._send(response["statusCode"], headers, out)

    def _send(self, code: int, headers: dict[str, Any], body: str | bytes | None) -> None:
        """The bytes chalice's handler sends through ``http.server``: status line, Server,
        Date, Content-Length and Content-Type (with a body), then the response's headers."""
        self._log_request(code)
        lines = [f"HTTP/1.1 {code} {_PHRASES.get(code, '')}\r\n", SERVER_HEADER, f"Date: {_Clock.date()}\r\n"]
        if body is None:
            headers["Content-Length"] = "0"
            data = b""
        else:
            data = body if isinstance(body, bytes) else body.encode("utf-8")
            lines.append(f"Content-Length: {len(data)}\r\n")
            lines.append(f"Content-Type: {headers.pop('Content-Type', 'application/json')}\r\n")
        for name, value in headers.items():
            for one in value if isinstance(value, list) else (value,):
                lines.append(f"{name}: {one}\r\n")
                if name.lower() == "connection":
                    self._note_connection(str(one))
        lines.append("\r\n")
        self.request.sendall("".join(lines).encode("latin-1", "strict") + data)

    def _note_connection(self, value: str) -> None:
        # http.server's send_header: a Connection header the app sets decides keep-alive.
        if value.lower() == "close":
            self.close_connection = True
        elif value.lower() == "keep-alive":
            self.close_connection = False

    def _json_error(
        self, status: int, message: str, headers: dict[str, str] | None = None, *, code: str | None = None
    ) -> None:
        body = json.dumps({"error": {"code": code or _CODES.get(status, "error"), "message": message}}).encode()
        extra = {**(headers or {}), "Content-Type": "application/json", "Content-Length": str(len(body))}
        if self.close_connection:
            extra["Connection"] = "close"
        self._log_request(status)
        lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, '')}\r\n", SERVER_HEADER, f"Date: {_Clock.date()}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in extra.items()]
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1", "strict")
        self.request.sendall(head if self.command == "HEAD" else head + body)

    def _refuse(self, refused: Refused) -> None:
        """A request the server will not serve: a JSON 4xx, and the connection closed
        (what follows on it cannot be trusted to start a request)."""
        self.close_connection = True
        self._log_error(f"code {refused.status}, message {refused.message}")
        self._json_error(refused.status, refused.message)

    def _method_not_allowed(self, head: RequestHead) -> None:
        headers = {}
        try:
            headers["Allow"] = ", ".join(sorted(self.routes[self.matcher.match_route(head.path).route]))
        except ValueError:
            pass  # an unknown path: nothing is allowed there
        self._json_error(405, f"unsupported method: {head.method}", headers)

    def _log_request(self, code: int) -> None:
        if self.access_log:
            self._log(f'"{self.requestline}" {code} -')

    def _log_error(self, message: str) -> None:
        self._log(message)

    def _log(self, message: str) -> None:
        # http.server's access log format, on stderr as before.
        stamp = time.strftime("%d/%b/%Y %H:%M:%S")
        sys.stderr.write(f"{self.client_address[0]} - - [{stamp}] {message}\n")


def request_id() -> str:
    """A version-4 UUID string, as ``str(uuid.uuid4())`` but without building a ``UUID``
    (a third of the cost: the context is built for every request)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


class LocalContext:
    """chalice local's ``LambdaContext``, with the same attributes and values: the
    function's name and memory, a fresh request id and the time left of the timeout.
    Chalice's builds a clock object and a ``uuid.UUID`` per request (~26k instructions).

    The request id is drawn when first read: only chalice's gateway errors (403) and a
    logger told to inject the context read it, and drawing it for every request cost a
    ``getrandom`` system call and ~2.7 us (bench/RESULTS.md, round 10)."""

    function_version = "$LATEST"
    invoked_function_arn = ""
    log_group_name = ""
    log_stream_name = ""
    identity = None
    client_context = None

    def __init__(self, function_name: str, memory_size: int, max_runtime_ms: int) -> None:
        self._start_time = time.time() * 1000
        self._max_runtime = max_runtime_ms
        self.function_name = function_name
        self.memory_limit_in_mb = memory_size

    @functools.cached_property
    def aws_request_id(self) -> str:
        return request_id()

    def get_remaining_time_in_millis(self) -> float:
        return self._max_runtime - (time.time() * 1000 - self._start_time)


def make_gateway(app: Any, config: Any, matcher: RememberingMatcher) -> Any:
    """chalice's ``LocalGateway`` for ``app``, finding routes through ``matcher`` and
    handing the app a ``LocalContext``."""
    from chalice.local import LambdaEventConverter, LocalGateway

    # Read once: each of chalice's Config properties walks the stage and global
    # dictionaries (~13 us a request for these three), and the config never changes.
    seconds = LocalGateway.MAX_LAMBDA_EXECUTION_TIME if config.lambda_timeout is None else config.lambda_timeout
    function_name, memory_size = config.function_name, config.lambda_memory_size

    class Gateway(LocalGateway):
        def _generate_lambda_context(self) -> Any:
            return LocalContext(function_name, memory_size, seconds * 1000)

    gateway = Gateway(app, config)
    gateway.event_converter = LambdaEventConverter(cast(Any, matcher), app.api.binary_types)
    return gateway


def make_handler(
    gateway: Any, routes: dict[str, Any], matcher: RememberingMatcher, max_body_bytes: int, *, access_log: bool
) -> type[ApiHandler]:
    """An ``ApiHandler`` class serving through ``gateway`` (chalice's ``LocalGateway``,
    its event converter finding routes through ``matcher``)."""
    from chalice.local import LocalGatewayException

    attrs = {
        "gateway": gateway,
        "gateway_error": LocalGatewayException,
        "routes": routes,
        "matcher": matcher,
        "max_body_bytes": max_body_bytes,
        "access_log": access_log,
    }
    return type("BoundApiHandler", (ApiHandler,), attrs)
