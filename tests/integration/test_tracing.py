"""Tracing without X-Ray: the drain, sweep and executor handlers run as in Lambda
(``LAMBDA_TASK_ROOT`` set, a sampled trace header) with the X-Ray daemon address
pointing at a UDP socket of this test, which receives the segment documents the
SDK would send to the daemon.  Each handler is one subsegment of the invocation's
trace, named for the handler; EMF metrics are printed for each too.  A task attempt
is a segment of the task's own trace (the one stored at submit)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.container import Container
from tests.helpers import query

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "1-5759e988-bd862e3fe1be46a994272793"
PARENT_ID = "53995c3f42cd8ad8"
TASK_TRACE_ID = "1-6a1b2c3d-0123456789abcdef01234567"


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    """A stand-in X-Ray daemon: a UDP socket on 127.0.0.1 that only listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    try:
        yield sock
    finally:
        sock.close()


def _segments(sock: socket.socket) -> list[dict[str, Any]]:
    """Every segment document received: each datagram is a header line, then JSON."""
    found = []
    while True:
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            return found
        header, _, body = data.decode().partition("\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        found.append(json.loads(body))


def _invoke(rt: Container, sock: socket.socket) -> tuple[dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKLANE_", "POWERTOOLS_", "AWS_", "_X_AMZN"))}
    env.update(
        LAMBDA_TASK_ROOT=str(ROOT),
        AWS_LAMBDA_FUNCTION_NAME="tasklane-test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{sock.getsockname()[1]}",
        _X_AMZN_TRACE_ID=f"Root={TRACE_ID};Parent={PARENT_ID};Sampled=1",
        TASKLANE_DATABASE_URL=rt.settings.database_url,
        TASKLANE_REDIS_URL=rt.settings.redis_url,
        TASKLANE_DRAIN_IDLE_EXIT_SECONDS="0.2",
        TASKLANE_DRAIN_MARGIN_SECONDS="0",
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.traced_invocations"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), done.stdout


def test_each_handler_is_a_named_subsegment_of_the_invocations_trace(rt: Container, daemon: socket.socket) -> None:
    results, stdout = _invoke(rt, daemon)
    assert results["executor"] == {"traced": True}
    assert results["executor_error"] == "PermanentError"

    received = _segments(daemon)
    # The API request is a subsegment of its invocation, annotated with the task it created,
    # and the task row keeps that span as the parent of the task's trace.
    api = [s for s in received if s["name"] == "## POST /api/v1/tasks"]
    assert len(api) == 1 and api[0]["annotations"]["task_id"] == results["api"]["id"]
    assert (api[0]["trace_id"], api[0]["parent_id"]) == (TRACE_ID, PARENT_ID)
    assert results["api"]["trace_id"] == TRACE_ID
    stored = query(rt.settings.database_url, "SELECT trace_context FROM tasks WHERE id = %s", results["api"]["id"])
    assert stored[0][0] == f"Root={TRACE_ID};Parent={api[0]['id']};Sampled=1"

    # Each attempt is a segment of its task's own trace, linked to the span that started
    # the task: the drained attempt of the API's task under the API's span, the executor
    # function's attempt under the parent its event named.
    attempts = {s["annotations"]["task_id"]: s for s in received if s["name"] == "attempt noop"}
    assert len(attempts) == 2
    drained = attempts[results["api"]["id"]]
    assert (drained["trace_id"], drained["parent_id"]) == (TRACE_ID, api[0]["id"])
    remote = attempts["7f9c2ad4-0000-4000-8000-000000000001"]
    assert (remote["trace_id"], remote["parent_id"]) == (TASK_TRACE_ID, "fedcba9876543210")
    for attempt in attempts.values():
        assert attempt["annotations"]["attempt"] == 1 and not attempt.get("fault")
        assert attempt["end_time"] >= attempt["start_time"] and "type" not in attempt  # a segment

    segments = [s for s in received if s["name"] not in ("attempt noop", "## POST /api/v1/tasks")]
    assert [s["name"] for s in segments] == ["## drain", "## sweep", "## executor", "## executor"]
    for s in segments:
        assert (s["type"], s["trace_id"], s["parent_id"]) == ("subsegment", TRACE_ID, PARENT_ID)
        assert s["annotations"]["Service"] == "tasklane"
        assert s["end_time"] >= s["start_time"] and not s["in_progress"]
    assert [s["annotations"]["ColdStart"] for s in segments] == [True, False, False, False]
    ok, failed = segments[2], segments[3]
    assert not ok.get("fault") and not ok.get("error")
    assert failed.get("fault") or failed.get("error")
    exceptions = failed["cause"]["exceptions"]
    assert exceptions[0]["type"] == "PermanentError"

    # The same invocations print their EMF metrics (CloudWatch picks them up from the log).
    emf = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"_aws"')]
    names = {m["Name"] for doc in emf for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"DrainClaimed", "SweepRescued", "ExecutorInvocations", "ExecutorErrors"} <= names
