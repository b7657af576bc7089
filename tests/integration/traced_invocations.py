"""Run as a script by tests/integration/test_tracing.py: invokes the app's drain,
sweep and executor handlers the way Lambda does, in an environment where
Powertools' Tracer is on (``LAMBDA_TASK_ROOT`` set, a trace header present), with
the X-Ray daemon address pointing at the test's UDP listener on 127.0.0.1.

The environment must be set before the X-Ray SDK is imported (it decides at import
whether it runs in Lambda), hence a process of its own."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any


class Context:
    """The parts of the Lambda context the handlers and Powertools read."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 2000


def scheduled_event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {},
    }


def api_submit(app: Any) -> dict[str, Any]:
    """POST /api/v1/tasks as API Gateway (REST, proxy) hands it to the API function."""
    from chalicelib.container import get_container
    from chalicelib.services.apikeys import create_key

    secret, _ = create_key(get_container().store, "t", actor="cli:test", name="traced")
    headers = {"X-API-Key": secret, "Content-Type": "application/json", "Host": "example.execute-api"}
    event = {
        "resource": "/api/v1/tasks",
        "path": "/api/v1/tasks",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"resourcePath": "/api/v1/tasks", "httpMethod": "POST", "stage": "api"},
        "body": json.dumps({"name": "noop", "payload": {}}),
        "isBase64Encoded": False,
    }
    response = app.app(event, Context("tasklane-api"))
    return dict(json.loads(response["body"]))


def main() -> int:
    import app

    results: dict[str, Any] = {}
    results["api"] = api_submit(app)
    results["drain"] = app.drain(scheduled_event(), Context("tasklane-drain"))
    results["sweep"] = app.sweep(scheduled_event(), Context("tasklane-sweep"))
    event = {
        "tasklane": 1,
        "task": {
            "id": "7f9c2ad4-0000-4000-8000-000000000001",
            "name": "noop",
            "tenant": "t",
            "attempt": 1,
            "timeout_seconds": 5,
            # The task's own trace (not the invocation's): its attempt is a segment there.
            "trace": "Root=1-6a1b2c3d-0123456789abcdef01234567;Parent=fedcba9876543210;Sampled=1",
        },
        "payload": {"traced": True},
    }
    results["executor"] = app.executor(event, Context("tasklane-executor"))
    try:
        app.executor({"not": "an executor event"}, Context("tasklane-executor"))
    except Exception as exc:  # reported to the test, which expects it
        results["executor_error"] = type(exc).__name__
    print(json.dumps(results, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
