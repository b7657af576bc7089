"""The local API server's handler (``tools.devstack.api_handler``) answers a request
with the bytes chalice's own ``ChaliceRequestHandler`` on ``http.server`` sends (but
the Date), keeps connections alive as it did, and refuses what it refused as JSON."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chalice import Chalice, Response
from chalice.local import ChaliceRequestHandler, LambdaContext, LocalDevServer, RouteMatcher

from tools.devstack.api_handler import NOT_SIGNED, LocalContext, RememberingMatcher, make_gateway, make_handler

CONFIG = SimpleNamespace(lambda_timeout=None, function_name="t", lambda_memory_size=128)


def _app() -> Chalice:
    app = Chalice("handler-test")

    @app.route("/echo", methods=["POST", "PUT"])
    def echo() -> Any:
        request = app.current_request
        event = request.to_original_event()
        return {
            "body": request.raw_body.decode("latin-1"),
            "headers": dict(request.headers),
            "event_headers": event["headers"],
            "query": event["multiValueQueryStringParameters"],
            "path": event["requestContext"]["path"],
        }

    @app.route("/items/{item}", methods=["GET", "DELETE"])
    def item(item: str) -> Any:
        if item == "none":
            return Response(body=None, status_code=204, headers={"X-Multi": ["a", "b"]})
        if item == "text":
            return Response(body="plain é", status_code=200, headers={"Content-Type": "text/plain"})
        return {"item": item, "query": app.current_request.query_params}

    return app


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    """(chalice's server, ours), serving the same app."""
    app = _app()
    theirs = LocalDevServer(app, CONFIG, "127.0.0.1", 0, handler_cls=ChaliceRequestHandler)  # type: ignore[arg-type]
    matcher = RememberingMatcher(RouteMatcher(list(app.routes)))
    gateway = make_gateway(app, CONFIG, matcher)
    import socketserver

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

    handler = make_handler(gateway, app.routes, matcher, 1000, access_log=False)
    ours = Server(("127.0.0.1", 0), handler)
    for server in (theirs.server, ours):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield theirs.server.server_address[1], ours.server_address[1]
    for server in (theirs.server, ours):
        server.shutdown()
        server.server_close()


def _exchange(port: int, *requests: bytes) -> bytes:
    """Send the requests on one connection, then read until the server closes it."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(requests))
        with contextlib.suppress(OSError):  # a server that refused may have closed already
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    answer = re.sub(rb"\r\nDate: [^\r]*", b"", b"".join(chunks))
    return re.sub(rb"x-amzn-RequestId: [-0-9a-f]*", b"x-amzn-RequestId: (random)", answer)


SAME = [
    b"POST /echo HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
    b"PUT /echo?x=1&x=2&y= HTTP/1.1\r\nContent-Length: 2\r\nX-Latin: \xe9\xff \r\nConnection: keep-alive\r\n\r\nhi",
    b"POST /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"GET /items/abc?q=1 HTTP/1.1\r\n\r\n",
    b"GET /items/none HTTP/1.1\r\n\r\n",
    b"GET /items/text HTTP/1.1\r\n\r\n",
    b"DELETE /items/x%20y HTTP/1.1\r\n\r\n",
    b"POST /items/abc HTTP/1.1\r\nContent-Length: 0\r\n\r\n",  # a 405 from the gateway, as chalice's
    b"OPTIONS /echo HTTP/1.1\r\n\r\n",
    b"GET //items/abc HTTP/1.1\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", SAME)
def test_the_same_bytes_as_chalices_handler(ports: tuple[int, int], request_bytes: bytes) -> None:
    theirs, ours = ports
    closing = request_bytes.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    if b"Connection: keep-alive" in request_bytes:
        closing = request_bytes + b"GET /items/last HTTP/1.1\r\nConnection: close\r\n\r\n"
    assert _exchange(ours, closing) == _exchange(theirs, closing)


def test_keep_alive_serves_requests_in_order_on_one_connection(ports: tuple[int, int]) -> None:
    theirs, ours = ports
    requests = [b"GET /items/%d HTTP/1.1\r\n\r\n" % i for i in range(5)]
    requests.append(b"GET /items/end HTTP/1.0\r\n\r\n")  # HTTP/1.0 without keep-alive: the server closes
    answer = _exchange(ours, *requests)
    assert answer == _exchange(theirs, *requests)
    assert answer.count(b"HTTP/1.1 200 OK") == 6


def test_expect_100_continue(ports: tuple[int, int]) -> None:
    theirs, ours = ports
    request = b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    answer = _exchange(ours, request)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert answer == _exchange(theirs, request)


def _json_status(answer: bytes) -> tuple[int, dict[str, Any], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"], head


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /items/a HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\nhello", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\nhello", 413),
        (b"GET /items/a HTTP/3.0\r\n\r\n", 400),
    ],
)
def test_refusals_are_json_4xx_and_close(ports: tuple[int, int], request_bytes: bytes, status: int) -> None:
    # A second request after the refused one is never served: the connection closes.
    answer = _exchange(ports[1], request_bytes, b"GET /items/after HTTP/1.1\r\n\r\n")
    got, error, head = _json_status(answer)
    assert (got, bool(error["code"]), bool(error["message"])) == (status, True, True)
    assert b"Connection: close" in head and b"after" not in answer


def _gateway_responses() -> dict[str, Any]:
    """API Gateway's own answers, as infra/app-overrides.json gives them to the stack."""
    overrides = json.loads((Path(__file__).parents[2] / "infra" / "app-overrides.json").read_text())
    body: dict[str, Any] = overrides["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    return dict(body["x-amazon-apigateway-gateway-responses"])


def test_no_route_with_an_authorization_header_is_the_json_403_api_gateway_answers(ports: tuple[int, int]) -> None:
    """With an Authorization header, chalice's server (as API Gateway) answers a 403 about
    its signature; ours answers it in the error shape, as the stack's DEFAULT_4XX makes
    API Gateway do."""
    request_bytes = b'GET /nowhere HTTP/1.1\r\nAuthorization: "x\r\nConnection: close\r\n\r\n'
    theirs = _exchange(ports[0], request_bytes)
    status, error, _ = _json_status(_exchange(ports[1], request_bytes))
    assert theirs.startswith(b"HTTP/1.1 403") and status == 403
    assert error == {"code": "request_refused", "message": NOT_SIGNED}
    template = _gateway_responses()["DEFAULT_4XX"]["responseTemplates"]["application/json"]
    assert json.loads(template.replace("$context.error.messageString", '"m"'))["error"]["code"] == "request_refused"


NO_ROUTE = [b"GET /nowhere HTTP/1.1\r\n\r\n", b"GET /api/v1/nope/x HTTP/1.1\r\nX-API-Key: k\r\n\r\n"]


@pytest.mark.parametrize("request_bytes", NO_ROUTE)
def test_no_route_is_the_json_404_api_gateway_answers(ports: tuple[int, int], request_bytes: bytes) -> None:
    """Where chalice's server answers 403 "Missing Authentication Token" for a path no
    route serves (as API Gateway does by default), ours answers what the stack's gateway response makes API Gateway
    answer, word for word, and keeps the connection."""
    theirs, ours = ports
    assert _exchange(theirs, request_bytes + b"GET /items/after HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
    answer = _exchange(ours, request_bytes, b"GET /items/after HTTP/1.1\r\nConnection: close\r\n\r\n")
    first, _, rest = answer.partition(b"HTTP/1.1 200 OK")
    status, error, _ = _json_status(first)
    responses = _gateway_responses()
    gateway = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert status == int(gateway["statusCode"]) == 404
    assert {"error": error} == json.loads(gateway["responseTemplates"]["application/json"])
    assert b'{"item":"after"' in rest


def test_the_gateway_responses_are_json_in_the_error_shape() -> None:
    """API Gateway's own refusals (throttled, too large, any other 4xx or 5xx) answer in
    the shape the API's do; $context.error.messageString is a quoted JSON string."""
    responses = _gateway_responses()
    assert {"THROTTLED", "REQUEST_TOO_LARGE", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    for response in responses.values():
        body = response["responseTemplates"]["application/json"].replace(
            "$context.error.messageString", json.dumps('a "quoted" message')
        )
        error = json.loads(body)["error"]
        assert set(error) == {"code", "message"} and error["code"] and error["message"]


def test_an_unknown_method_is_a_json_405_with_allow(ports: tuple[int, int]) -> None:
    status, error, head = _json_status(_exchange(ports[1], b"TRACE /echo HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert (status, error["code"]) == (405, "method_not_allowed")
    assert b"Allow: POST, PUT" in head


def test_the_context_has_chalices_attributes_and_a_fresh_uuid4() -> None:
    theirs = LambdaContext("fn", 256, max_runtime_ms=900_000)
    ours = [LocalContext("fn", 256, 900_000) for _ in range(200)]
    skip = {"aws_request_id", "_start_time", "_time_source"}
    expected = {k: v for k, v in vars(theirs).items() if k not in skip}
    for context in ours[:3]:
        got = {k: getattr(context, k) for k in expected}
        assert got == expected
        assert 899_000 < context.get_remaining_time_in_millis() <= 900_000
    ids = [context.aws_request_id for context in ours]
    assert len(set(ids)) == len(ids)
    for one in ids:
        parsed = uuid.UUID(one)
        assert (str(parsed), parsed.version, parsed.variant) == (one, 4, uuid.RFC_4122)


def test_the_request_id_is_drawn_when_first_read_and_then_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.devstack.api_handler as api_handler

    drawn: list[str] = []

    def counted() -> str:
        drawn.append(str(uuid.uuid4()))
        return drawn[-1]

    monkeypatch.setattr(api_handler, "request_id", counted)
    contexts = [LocalContext("fn", 256, 900_000) for _ in range(5)]
    assert drawn == []  # a request nobody asks the id of draws none
    first = contexts[0].aws_request_id
    assert (first, contexts[0].aws_request_id, drawn) == (first, first, [first])


@pytest.mark.parametrize("timeout", [None, 30])
def test_the_gateways_context_is_the_one_chalices_gateway_makes(timeout: int | None) -> None:
    from chalice.local import LocalGateway

    config = SimpleNamespace(lambda_timeout=timeout, function_name="api_handler", lambda_memory_size=256)
    app = _app()
    ours = make_gateway(app, config, RememberingMatcher(RouteMatcher(list(app.routes))))._generate_lambda_context()
    theirs = LocalGateway(app, config)._generate_lambda_context()  # type: ignore[arg-type]
    for name in ("function_name", "memory_limit_in_mb", "function_version", "invoked_function_arn"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert abs(ours.get_remaining_time_in_millis() - theirs.get_remaining_time_in_millis()) < 1_000
