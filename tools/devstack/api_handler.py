"""The local API server's request handler: ``chalice local``'s, hardened to answer
like API Gateway where the dev server would not.

- Methods the dev server does not know (TRACE, CONNECT, ...) get a JSON 405.
- A Content-Length that is not a plain non-negative number (``abc``, ``1e3``,
  ``-1``, two different values) is a JSON 400; one above the body limit is a 413,
  answered without reading the body.  Chalice's handler calls ``int()`` on it
  unguarded, and the exception drops the connection with no response at all.
- Whatever ``http.server`` refuses itself (a malformed request line, an over-long
  header or too many of them, an unknown HTTP version) is answered with the same
  JSON error shape instead of its HTML page, and as a 4xx: it is the client's error.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

_DIGITS = re.compile("[0-9]{1,15}")
_CODES = {
    400: "validation_error",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


def make_handler(base: type, routes: dict[str, Any], matcher: Any, max_body_bytes: int) -> type:
    """A subclass of chalice's ``ChaliceRequestHandler`` (passed in: chalice is imported
    lazily) whose gateway finds routes through ``matcher`` (a ``RememberingMatcher``)."""
    from chalice.local import LambdaEventConverter, LocalGateway

    class Handler(base):  # type: ignore[misc]
        def __init__(self, request: Any, client_address: Any, server: Any, app_object: Any, config: Any) -> None:
            # ChaliceRequestHandler.__init__ with the gateway's route matcher replaced;
            # BaseHTTPRequestHandler.__init__ then serves the connection.
            self.local_gateway = gateway = LocalGateway(app_object, config)
            gateway.event_converter = LambdaEventConverter(matcher, app_object.api.binary_types)
            BaseHTTPRequestHandler.__init__(self, request, client_address, server)

        # Headers and body go out in separate writes; with Nagle's algorithm on, the
        # client's delayed ACK then adds ~40 ms to every response.
        disable_nagle_algorithm = True

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):
                return self._method_not_allowed
            raise AttributeError(name)

        def _json_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            code = _CODES.get(status, "error")
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            if getattr(self, "request_version", "") == "HTTP/0.9":
                self.request_version = "HTTP/1.0"  # a garbled request line still gets a status line
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _method_not_allowed(self) -> None:
            headers = {}
            try:
                headers["Allow"] = ", ".join(sorted(routes[matcher.match_route(self.path).route]))
            except ValueError:
                pass  # an unknown path: nothing is allowed there
            self._json_error(405, f"unsupported method: {self.command}", headers)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own refusals, in the API's JSON shape and never as a 5xx."""
            self.close_connection = True
            if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED or code >= 500 or code < 400:
                code = 400
            self.log_error("code %d, message %s", code, message)
            self._json_error(code, message or HTTPStatus(code).phrase)

        def _content_length(self) -> int:
            values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
            if not values:
                return 0
            if len(values) > 1:
                raise _Refused(400, "conflicting Content-Length headers")
            value = values.pop()
            if not _DIGITS.fullmatch(value):
                raise _Refused(400, f"Content-Length must be a non-negative integer, got {value[:40]!r}")
            length = int(value)
            if length > max_body_bytes:
                raise _Refused(413, f"the request body is {length} bytes; the limit is {max_body_bytes}")
            return length

        def _parse_payload(self) -> tuple[dict[str, str], bytes | None]:
            length = self._content_length()
            body = self.rfile.read(length) if length > 0 else None
            return dict(self.headers), body

        def _generic_handle(self) -> None:
            try:
                super()._generic_handle()
            except _Refused as refused:
                self.close_connection = True  # the body (if any) was not read
                self._json_error(refused.status, refused.message)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

    return Handler
