"""The API function's own cost per submit, invoked the way Lambda invokes it: an API
Gateway (REST, proxy integration) event handed to the Chalice app object
(``app.app(event, context)``), no HTTP server in between.  Runs in a subprocess of
its own (``python -m bench.apicost``) so that the app reads the bench's settings
from its environment, as a Lambda would, and imports from ``BenchEnv.code_root``.

Prints one JSON object: the latency summary of the timed calls, their rate and the
CPU per call of this process (the app's Python; PostgreSQL and Redis run elsewhere)."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

os.environ.setdefault("TASKLANE_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
# What Lambda sets: the app then pushes to Redis before it answers (config.default_submit_push).
os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "tasklane-dev")

from bench import stats
from bench.common import self_cpu


class LambdaContext:
    """The attributes Chalice and Powertools read from Lambda's context object."""

    function_name = "tasklane-dev"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:tasklane-dev"
    memory_limit_in_mb = 512
    log_group_name = "/aws/lambda/tasklane-dev"
    log_stream_name = "bench"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def proxy_event(path: str, body: bytes, api_key: str) -> dict[str, Any]:
    """A REST API proxy-integration event for ``POST path`` (what API Gateway sends)."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "X-API-Key": api_key, "Host": "bench.local"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": "POST",
            "path": "/api" + path,
            "stage": "api",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body.decode(),
        "isBase64Encoded": False,
    }


def measure(seconds: float, max_count: int) -> dict[str, Any]:
    from app import app
    from chalicelib.container import get_container
    from chalicelib.services.apikeys import ensure_key

    key = "bench-api-" + uuid.uuid4().hex
    ensure_key(get_container().store, key, rate_limit_per_minute=10_000_000)
    body = json.dumps({"name": "noop", "payload": {"n": 1}}).encode()
    event = proxy_event("/api/v1/tasks", body, key)

    def call() -> None:
        response = app(event, LambdaContext())
        if response["statusCode"] != 201:
            raise SystemExit(f"submit answered {response['statusCode']}: {response['body'][:300]}")

    for _ in range(20):  # warm: imports on first call, pool, key cache
        call()
    lat: list[float] = []
    cpu0 = self_cpu()
    start = time.perf_counter()
    while len(lat) < max_count and time.perf_counter() - start < seconds:
        t = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {
        "rate": len(lat) / wall,
        "cpu_ms_per_call": (self_cpu() - cpu0) / len(lat) * 1000,
        **stats.latency_summary(lat),
    }


if __name__ == "__main__":
    print(json.dumps(measure(float(sys.argv[1]), int(sys.argv[2]))))
