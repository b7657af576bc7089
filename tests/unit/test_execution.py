"""The batch runner without any I/O: outcomes, timeouts, cancellation, heartbeats."""

from __future__ import annotations

import threading
import time
from typing import Any

from chalicelib.core.errors import PermanentError, RetryableError, TaskCancelled
from chalicelib.core.model import Claimed, Status
from chalicelib.core.retry import RetryPolicy
from chalicelib.execution.runner import BatchRunner
from chalicelib.tasktypes import Registry, TaskContext


def registry() -> Registry:
    reg = Registry()

    @reg.task("ok")
    def ok(payload: Any, ctx: TaskContext) -> Any:
        return {"echo": payload, "attempt": ctx.attempt}

    @reg.task("retry")
    def retry(payload: Any, ctx: TaskContext) -> Any:
        raise RetryableError("far side is down")

    @reg.task("bug")
    def bug(payload: Any, ctx: TaskContext) -> Any:
        raise KeyError("oops")

    @reg.task("perm")
    def perm(payload: Any, ctx: TaskContext) -> Any:
        raise PermanentError("bad input")

    @reg.task("hang")
    def hang(payload: Any, ctx: TaskContext) -> Any:
        ctx.wait(30)
        raise TaskCancelled("stopped")

    @reg.task("set")
    def not_json(payload: Any, ctx: TaskContext) -> Any:
        return {1, 2}

    @reg.task("huge")
    def huge(payload: Any, ctx: TaskContext) -> Any:
        return "x" * 2000

    return reg


def claimed(name: str, attempts: int = 1, max_retries: int = 3, timeout: float = 5) -> Claimed:
    return Claimed(f"id-{name}", "t", name, "normal", {"p": 1}, attempts, max_retries, timeout)


def run(*batch: Claimed, heartbeat: Any = None, every: float = 10.0) -> dict[str, Any]:
    runner = BatchRunner(registry(), RetryPolicy(base_seconds=2, jitter=0), concurrency=4, max_result_bytes=1000)
    try:
        outs = runner.run(list(batch), "tok", heartbeat=heartbeat or (lambda ids: set()), heartbeat_every=every)
    finally:
        runner.close()
    return {o.id: o for o in outs}


def test_success_records_the_json_result() -> None:
    out = run(claimed("ok"))["id-ok"]
    assert out.status is Status.COMPLETED and out.result_json == '{"echo":{"p":1},"attempt":1}'


def test_retryable_and_unknown_exceptions_retry_with_backoff() -> None:
    outs = run(claimed("retry", attempts=2), claimed("bug"))
    assert outs["id-retry"].status is Status.PENDING and outs["id-retry"].delay_seconds == 4
    assert outs["id-bug"].status is Status.PENDING and outs["id-bug"].error_type == "KeyError"


def test_permanent_error_and_exhausted_budget_fail() -> None:
    outs = run(claimed("perm"), claimed("retry", attempts=4, max_retries=3))
    assert outs["id-perm"].status is Status.FAILED and outs["id-perm"].error == "bad input"
    assert outs["id-retry"].status is Status.FAILED


def test_unknown_name_non_json_and_oversized_results_fail_permanently() -> None:
    outs = run(claimed("nope"), claimed("set"), claimed("huge"))
    assert outs["id-nope"].error_type == "UnknownTaskName"
    assert outs["id-set"].error_type == "ResultError"
    assert outs["id-huge"].error_type == "ResultTooLarge"
    assert all(o.status is Status.FAILED for o in outs.values())


def test_timeout_fails_the_attempt_without_waiting_for_the_executor() -> None:
    started = time.monotonic()
    out = run(claimed("hang", timeout=0.3))["id-hang"]
    assert time.monotonic() - started < 2
    assert out.status is Status.PENDING and out.error_type == "TimeoutError"


def test_heartbeat_delivers_cancellation_to_running_executor() -> None:
    beats: list[list[str]] = []
    lock = threading.Lock()

    def heartbeat(ids: list[str]) -> set[str]:
        with lock:
            beats.append(ids)
        return {"id-hang"}

    out = run(claimed("hang", timeout=10), heartbeat=heartbeat, every=0.1)["id-hang"]
    assert beats and beats[0] == ["id-hang"]
    assert out.status is Status.CANCELLED
