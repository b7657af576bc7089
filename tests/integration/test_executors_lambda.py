"""The Lambda handlers through Chalice's test client (``chalice.test.Client``): the
drain's time budget, lease rescue by the sweep, Powertools metrics, and executor
mode ``lambda`` (drain → boto3 ``invoke`` → the ``executor`` function)."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice import test as chalice_test
from chalice.local import LambdaContext
from chalice.test import Client

import app as tasklane_app
from chalicelib import container as runtime
from chalicelib import entrypoints as functions
from chalicelib.adapters.aws import clients as awsclients
from chalicelib.container import Container
from chalicelib.services.submit import submit
from tests.helpers import lease_lapsed, request, status_counts, wait_for
from tests.state import clean, fast_settings, redis_db_url

LAMBDA_REDIS_DB = 6  # its own db: see tests/integration/test_executors_aws.py


@pytest.fixture
def install(database_url: str, redis_server: str) -> Iterator[Callable[..., Container]]:
    """Make the app's process-wide runtime one built from test settings."""
    redis_url = redis_db_url(redis_server, LAMBDA_REDIS_DB)
    clean(database_url, redis_url)
    built: list[Container] = []

    def factory(**overrides: object) -> Container:
        rt = Container.build(fast_settings(database_url, redis_url, **overrides))
        built.append(rt)
        _reset()
        runtime._runtime = rt
        return rt

    yield factory
    _reset()
    for rt in built:
        rt.close()


def _reset() -> None:
    if functions._drainer is not None:
        functions._drainer.close()
    functions._drainer = None
    runtime._runtime = None


def scheduled_event(client: Client) -> dict[str, Any]:
    return dict(
        client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])
    )


# The timed drain's invocation: Chalice's test client gives every invocation 3 s,
# which left a claim window of 1 s and a 1 s bound on a batch; a loaded machine could
# stall through either.  This one lasts 30 s and claims only during the first 2 s.
BUDGET_MS = 30_000
CLAIM_WINDOW_SECONDS = 2.0
SLEEP_SECONDS = 1.0


def test_drain_stops_claiming_when_its_budget_runs_low(
    install: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = install(
        drain_margin_seconds=BUDGET_MS / 1000 - CLAIM_WINDOW_SECONDS, drain_batch_size=2, drain_idle_exit_seconds=5.0
    )
    with Client(tasklane_app.app, stage_name="local") as client:
        # A first invocation pays the cold start (Powertools builds its Tracer, which
        # loads the X-Ray SDK), so the timed one below starts claiming at once.  Its 3 s
        # are below the margin: it claims nothing.
        assert client.lambda_.invoke("drain", scheduled_event(client)).payload["claimed"] == 0
    contexts: list[LambdaContext] = []

    def long_invocation(function_name: str, memory_size: int) -> LambdaContext:
        contexts.append(LambdaContext(function_name, memory_size=memory_size, max_runtime_ms=BUDGET_MS))
        return contexts[-1]

    monkeypatch.setattr(chalice_test, "LambdaContext", long_invocation)
    # Each batch of two runs for at least SLEEP_SECONDS, so the window holds at most
    # three claims: six tasks, whatever the machine's speed; a drain that ignored its
    # budget would claim all ten.
    ids = [submit(rt, "t1", request("sleep", {"seconds": SLEEP_SECONDS})).task.id for _ in range(10)]
    with Client(tasklane_app.app, stage_name="local") as client:
        stats = client.lambda_.invoke("drain", scheduled_event(client)).payload
    [context] = contexts
    # It returned inside its invocation (the Lambda would have been cut off otherwise):
    # the last batch, started with more than the margin left, finished within it.
    assert context.get_remaining_time_in_millis() > 0, "the drain overran its invocation"
    assert 2 <= stats["claimed"] <= 6, stats
    assert stats["completed"] == stats["claimed"]  # a started batch is finished, not abandoned
    counts = status_counts(rt.settings.database_url)
    assert counts.get("QUEUED") == len(ids) - stats["claimed"], counts


def test_a_batch_left_behind_by_a_dead_drain_is_rescued(install: Callable[..., Container]) -> None:
    rt = install()
    task = submit(rt, "t1", request("noop", {"n": 1})).task
    # A drain claims the task (Redis lease and PostgreSQL row) and is killed before running it.
    ids = list(rt.queue.claim(10, rt.settings.lease_seconds))
    assert ids == [task.id]
    assert rt.store.claim(ids, str(uuid.uuid4()), rt.settings.lease_seconds, actor="killed-drain")
    wait_for(lambda: lease_lapsed(rt.settings.database_url, task.id), timeout=rt.settings.lease_seconds + 10)
    with Client(tasklane_app.app, stage_name="local") as client:
        report = client.lambda_.invoke("sweep", scheduled_event(client)).payload
        assert report["rescued"] == 1, report
        deadline = time.monotonic() + 10
        while (found := rt.store.get_task("t1", task.id)) is not None and found.status.value != "COMPLETED":
            assert time.monotonic() < deadline, found
            client.lambda_.invoke("drain", scheduled_event(client))
    assert found is not None and found.attempts == 2 and found.result == {"n": 1}


def test_handlers_flush_powertools_metrics(
    install: Callable[..., Container], capsys: pytest.CaptureFixture[str]
) -> None:
    rt = install()
    submit(rt, "t1", request("noop"))
    with Client(tasklane_app.app, stage_name="local") as client:
        client.lambda_.invoke("drain", scheduled_event(client))
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {m["Name"] for blob in blobs for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"DrainClaimed", "DrainCompleted"} <= names, names
    assert {d["Namespace"] for blob in blobs for d in blob["_aws"]["CloudWatchMetrics"]} == {"Tasklane"}
    completed = [b["DrainCompleted"] for b in blobs if "DrainCompleted" in b]
    assert completed in ([1.0], [[1.0]])


class FakeLambda:
    """Stands in for the Lambda service: runs the app's executor function through
    Chalice's test client and reports errors the way Lambda does (FunctionError)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(kw)
        assert kw["FunctionName"] == "tasklane-local-executor"
        event = json.loads(kw["Payload"])
        try:
            result = self.client.lambda_.invoke("executor", event).payload
        except Exception as exc:
            body = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(body).encode())}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result).encode())}


def test_executor_mode_lambda_runs_tasks_in_the_executor_function(
    install: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = install(executor_mode="lambda", executor_function="tasklane-local-executor", executor_concurrency=1)
    ok = submit(rt, "t1", request("noop", {"hello": "lambda"}, timeout_seconds=40)).task
    permanent = submit(rt, "t1", request("fail", {"permanent": True})).task
    flaky = submit(rt, "t1", request("fail", {"times": 1})).task
    with Client(tasklane_app.app, stage_name="local") as client:
        fake = FakeLambda(client)
        timeouts: list[float] = []

        def fake_client(service: str, *, read_timeout: float = 30.0, max_attempts: int = 3) -> Any:
            assert service == "lambda" and max_attempts == 1  # the drainer, not botocore, decides on retries
            timeouts.append(read_timeout)
            return fake

        monkeypatch.setattr(awsclients, "client", fake_client)
        deadline = time.monotonic() + 20
        while True:
            states = {t: rt.store.get_task("t1", t) for t in (ok.id, permanent.id, flaky.id)}
            if all(s is not None and s.status.value in ("COMPLETED", "FAILED") for s in states.values()):
                break
            assert time.monotonic() < deadline, states
            client.lambda_.invoke("drain", scheduled_event(client))
            client.lambda_.invoke("sweep", scheduled_event(client))
    done = {k: v for k, v in states.items() if v is not None}
    assert done[ok.id].status.value == "COMPLETED" and done[ok.id].result == {"hello": "lambda"}
    assert done[permanent.id].status.value == "FAILED" and done[permanent.id].attempts == 1
    assert done[flaky.id].status.value == "COMPLETED" and done[flaky.id].attempts == 2
    events = [json.loads(c["Payload"]) for c in fake.calls]
    assert {e["task"]["id"] for e in events} == {ok.id, permanent.id, flaky.id}
    assert all(c["InvocationType"] == "RequestResponse" for c in fake.calls)
    # Each invocation carries its task's trace: in the event and in the ClientContext.
    traces = {t.id: t.trace_context for t in (ok, permanent, flaky)}
    assert all(t is not None for t in traces.values())
    for call, event in zip(fake.calls, events, strict=True):
        assert event["task"]["trace"] == traces[event["task"]["id"]]
        context = json.loads(base64.b64decode(call["ClientContext"]))
        assert context == {"custom": {"X-Amzn-Trace-Id": traces[event["task"]["id"]]}}
    assert max(timeouts) > 40  # the read timeout follows the task's own timeout (40 s + slack)


def test_executor_function_rejects_unknown_task_names() -> None:
    from chalicelib.core.errors import PermanentError

    with Client(tasklane_app.app, stage_name="local") as client:
        event = {"tasklane": 1, "task": {"id": "x", "name": "nope", "tenant": "t", "attempt": 1}, "payload": {}}
        with pytest.raises(PermanentError, match="nope"):
            client.lambda_.invoke("executor", event)
