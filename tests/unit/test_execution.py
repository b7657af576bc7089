"""The batch runner without any I/O: outcomes, timeouts, cancellation, heartbeats."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from chalicelib.core.errors import PermanentError, RetryableError, TaskCancelled
from chalicelib.core.model import Claimed, Status
from chalicelib.core.retry import RetryPolicy
from chalicelib.execution.remote import handle
from chalicelib.execution.runner import BatchRunner
from chalicelib.execution.window import Window
from chalicelib.tasktypes import Registry, TaskContext, require
from chalicelib.tasktypes.context import NO_PORTS, TaskPorts

HANG_SECONDS = 30


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
        ctx.wait(HANG_SECONDS)
        raise TaskCancelled("stopped")

    @reg.task("set")
    def not_json(payload: Any, ctx: TaskContext) -> Any:
        return {1, 2}

    @reg.task("slow-down")
    def slow_down(payload: Any, ctx: TaskContext) -> Any:
        raise RetryableError("throttled", retry_after=payload["p"])

    @reg.task("progress")
    def progress(payload: Any, ctx: TaskContext) -> Any:
        return ctx.report_progress(100, "done")

    @reg.task("strict", validate=lambda payload: require(payload.get("p") == 2, "p must be 2"))
    def strict(payload: Any, ctx: TaskContext) -> Any:
        raise AssertionError("never runs: the payload fails validation")

    @reg.task("slow")
    def slow(payload: Any, ctx: TaskContext) -> Any:
        ctx.wait(0.5)  # ends early only when cancelled
        return "slow"

    @reg.task("huge")
    def huge(payload: Any, ctx: TaskContext) -> Any:
        return "x" * 2000

    return reg


def claimed(name: str, attempts: int = 1, max_retries: int = 3, timeout: float = 5) -> Claimed:
    return Claimed(f"id-{name}", "t", name, "normal", {"p": 1}, attempts, max_retries, timeout)


def run(*batch: Claimed, heartbeat: Any = None, every: float = 10.0, ports: TaskPorts = NO_PORTS) -> dict[str, Any]:
    runner = BatchRunner(
        registry(), RetryPolicy(base_seconds=2, jitter=0), concurrency=4, max_result_bytes=1000, ports=ports
    )
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
    # Bounded by the executor's own wait (30 s), which the runner must not sit out: a
    # stopwatch near the 0.3 s timeout would measure the machine's load instead.
    assert time.monotonic() - started < HANG_SECONDS
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


def test_a_task_type_may_choose_its_retry_delay() -> None:
    asked = Claimed("id-a", "t", "slow-down", "normal", {"p": 42}, 1, 3, 5)
    huge = Claimed("id-b", "t", "slow-down", "normal", {"p": 10**9}, 1, 3, 5)
    outs = run(asked, huge)
    assert outs["id-a"].status is Status.PENDING and outs["id-a"].delay_seconds == 42  # not the 2 s backoff
    assert outs["id-b"].delay_seconds == RetryPolicy().max_retry_after_seconds  # bounded


def test_progress_goes_through_the_port_with_the_lease_token() -> None:
    written: list[tuple[str, str, int, str | None]] = []

    class Reporter:
        def set_progress(self, task_id: str, token: str, progress: int, message: str | None) -> bool:
            written.append((task_id, token, progress, message))
            return True

    assert run(claimed("progress"), ports=TaskPorts(progress=Reporter()))["id-progress"].result_json == "true"
    assert written == [("id-progress", "tok", 100, "done")]
    # Without the port (the executor Lambda function) progress is simply not written.
    assert run(claimed("progress"))["id-progress"].result_json == "false"


def test_validation_runs_before_every_attempt_in_the_drainer() -> None:
    out = run(claimed("strict"))["id-strict"]
    assert out.status is Status.FAILED and out.error_type == "PayloadError" and out.error == "p must be 2"


def test_the_executor_function_validates_then_runs_through_the_same_path() -> None:
    from chalicelib.core.errors import PayloadError

    task = {"id": "id-x", "name": "sleep", "tenant": "t", "attempt": 1, "max_retries": 0, "timeout_seconds": 5}
    with pytest.raises(PayloadError):
        handle({"tasklane": 1, "task": task, "payload": {"seconds": -1}}, None)
    assert handle({"tasklane": 1, "task": task, "payload": {"seconds": 0}}, None) == {"slept": 0.0, "attempt": 1}


def _early_run(*batch: Claimed, every: float = 10.0) -> tuple[list[tuple[float, list[str]]], dict[str, Any], list]:
    """Runs ``batch`` with an outcome sink; returns (when and what the sink got, the
    outcomes returned at the end, the heartbeats' id lists)."""
    runner = BatchRunner(registry(), RetryPolicy(base_seconds=2, jitter=0), concurrency=4, max_result_bytes=1000)
    handed: list[tuple[float, list[str]]] = []
    beats: list[list[str]] = []

    def heartbeat(ids: list[str]) -> set[str]:
        beats.append(list(ids))
        return set()

    start = time.monotonic()
    try:
        outs = runner.run(
            list(batch),
            "tok",
            heartbeat=heartbeat,
            heartbeat_every=every,
            on_outcomes=lambda got: handed.append((time.monotonic() - start, [o.id for o in got])),
        )
    finally:
        runner.close()
    return handed, {o.id: o for o in outs}, beats


def test_a_quick_task_is_handed_over_without_waiting_for_a_slow_sibling() -> None:
    # The slow sibling runs until the quick task has been handed over and a heartbeat
    # has come after that: the order of events proves the hand-over came first,
    # whatever the machine's load (a runner that waited for the batch's end would
    # leave it waiting out its 10 s).
    reg = registry()
    handed_over, beat_since = threading.Event(), threading.Event()
    log: list[tuple[str, list[str]]] = []  # hand-overs and heartbeats, in the order they came

    @reg.task("held")
    def held(payload: Any, ctx: TaskContext) -> Any:
        if not handed_over.wait(10):
            return "the quick task was not handed over"
        if not beat_since.wait(10):
            return "no heartbeat after the hand-over"
        return "outlived the hand-over"

    def heartbeat(ids: list[str]) -> set[str]:
        log.append(("beat", list(ids)))
        if handed_over.is_set():
            beat_since.set()
        return set()

    def sink(got: list[Any]) -> None:
        log.append(("handed", [o.id for o in got]))
        handed_over.set()

    runner = BatchRunner(reg, RetryPolicy(base_seconds=2, jitter=0), concurrency=4, max_result_bytes=1000)
    quick = Claimed("id-quick", "t", "ok", "normal", {"p": 1}, 1, 3, 5)
    try:
        outs = runner.run([claimed("held"), quick], "tok", heartbeat=heartbeat, heartbeat_every=0.05, on_outcomes=sink)
    finally:
        runner.close()
    rest = {o.id: o for o in outs}
    assert set(rest) == {"id-held"} and rest["id-held"].status is Status.COMPLETED
    assert rest["id-held"].result_json == '"outlived the hand-over"'
    assert [ids for kind, ids in log if kind == "handed"] == [["id-quick"]]
    # Heartbeats after the hand-over no longer hold the quick task's lease.
    after = log[log.index(("handed", ["id-quick"])) + 1 :]
    assert after and all(ids == ["id-held"] for _, ids in after), log


def test_every_outcome_leaves_the_batch_exactly_once() -> None:
    batch = [Claimed(f"id-{i}", "t", "ok", "normal", {"p": i}, 1, 3, 5) for i in range(20)]
    handed, rest, _ = _early_run(*batch, claimed("slow"))
    early = [i for _, ids in handed for i in ids]
    assert sorted(early + list(rest)) == sorted([f"id-{i}" for i in range(20)] + ["id-slow"])
    assert len(early) == len(set(early)) and not set(early) & set(rest)


def _last_run(*batch: Claimed, on_last: Any) -> tuple[list[tuple[float, list[str]]], dict[str, Any]]:
    """Runs ``batch`` with an early sink and ``on_last``; returns what the early sink got
    and the outcomes returned."""
    runner = BatchRunner(registry(), RetryPolicy(base_seconds=2, jitter=0), concurrency=4, max_result_bytes=1000)
    handed: list[tuple[float, list[str]]] = []
    try:
        outs = runner.run(
            list(batch),
            "tok",
            heartbeat=lambda ids: set(),
            heartbeat_every=10.0,
            on_outcomes=lambda got: handed.append((0.0, [o.id for o in got])),
            on_last=on_last,
        )
    finally:
        runner.close()
    return handed, {o.id: o for o in outs}


def test_the_lane_that_decides_the_last_outcome_passes_it_on_before_the_batch_ends() -> None:
    caller = threading.get_ident()
    seen: list[tuple[int, list[str], list[Status]]] = []

    def on_last(got: list[Any]) -> None:
        seen.append((threading.get_ident(), [o.id for o in got], [o.status for o in got]))

    batch = [Claimed(f"id-{i}", "t", "ok", "normal", {"p": i}, 1, 3, 5) for i in range(20)]
    handed, rest = _last_run(*batch, claimed("retry"), on_last=on_last)
    assert len(seen) == 1 and seen[0][0] != caller  # once, on a lane's thread
    last = seen[0][1]
    early = [i for _, ids in handed for i in ids]
    # Every outcome leaves the batch once: early, by the last lane, or returned (none).
    assert rest == {}
    assert sorted(early + last) == sorted([f"id-{i}" for i in range(20)] + ["id-retry"])
    assert len(set(early + last)) == 21
    assert "id-retry" in early + last


def test_an_on_last_that_raises_leaves_its_outcomes_to_the_batch_end() -> None:
    def on_last(got: list[Any]) -> None:
        raise RuntimeError("could not send")

    handed, rest = _last_run(claimed("ok"), on_last=on_last)
    assert handed == [] and set(rest) == {"id-ok"} and rest["id-ok"].status is Status.COMPLETED


def test_a_last_task_that_times_out_is_decided_by_the_supervisor_and_returned() -> None:
    calls: list[list[str]] = []
    started = time.monotonic()
    _, rest = _last_run(claimed("hang", timeout=0.2), on_last=lambda got: calls.append([o.id for o in got]))
    assert time.monotonic() - started < HANG_SECONDS
    assert calls == [] and set(rest) == {"id-hang"}
    assert rest["id-hang"].status is Status.PENDING and rest["id-hang"].error_type == "TimeoutError"


def test_a_lone_task_is_never_handed_over_early() -> None:
    handed, rest, _ = _early_run(claimed("ok"))
    assert handed == [] and set(rest) == {"id-ok"}


def test_cancellation_reaches_a_task_before_and_while_it_waits() -> None:
    import threading
    import time as _time

    from chalicelib.tasktypes.context import TaskContext

    early = TaskContext("t-1", "noop", "acme", 1, 3, 5.0)
    early.request_cancel()
    assert early.cancel_requested and early.wait(5.0) is True  # no sleep: already cancelled

    waiting = TaskContext("t-2", "noop", "acme", 1, 3, 5.0)
    assert waiting.wait(0.0) is False and not waiting.cancel_requested
    threading.Timer(0.05, waiting.request_cancel).start()
    start = _time.monotonic()
    assert waiting.wait(HANG_SECONDS) is True
    # Woken by the cancel, not at the end of the wait (which also reports it).
    assert _time.monotonic() - start < HANG_SECONDS


def test_the_task_log_context_restores_the_threads_keys() -> None:
    from chalicelib.observability.log import logger
    from chalicelib.observability.powertools import task_log_context

    logger.thread_safe_append_keys(trace_id="outer")
    try:
        with task_log_context("t-1", "noop", "acme", 2, None):
            logger.thread_safe_append_keys(own="key")  # a task type's own key
            keys = logger.thread_safe_get_current_keys()
            assert keys["task_id"] == "t-1" and keys["attempt"] == 2 and keys["trace_id"] is None
        after = logger.thread_safe_get_current_keys()
        assert after.get("trace_id") == "outer" and "task_id" not in after and "own" not in after
    finally:
        logger.thread_safe_remove_keys(["trace_id"])


def test_parent_results_cross_the_lambda_boundary_only_for_tasks_with_parents() -> None:
    from chalicelib.tasktypes.context import TaskContext
    from chalicelib.tasktypes.invoke import event_for

    plain = TaskContext(task_id="p", name="noop", tenant="t", attempt=1, max_retries=0, timeout_seconds=5)
    assert "parent_results" not in event_for("noop", {}, plain)["task"]
    child = TaskContext(
        task_id="c", name="noop", tenant="t", attempt=1, max_retries=0, timeout_seconds=5, parent_results={"a": 1}
    )
    event = event_for("noop", {"x": 1}, child)
    assert event["task"]["parent_results"] == {"a": 1}
    assert handle(event, None) == {"payload": {"x": 1}, "parents": {"a": 1}}


def test_what_on_last_returns_its_lane_calls_once_the_batch_is_finished() -> None:
    sent_on: list[int] = []
    after: list[tuple[int, int]] = []
    called = threading.Event()

    def read_answer() -> None:
        after.append((threading.get_ident(), len(sent_on)))
        called.set()

    def on_last(got: list[Any]) -> Any:
        sent_on.append(threading.get_ident())
        return read_answer

    handed, rest = _last_run(claimed("ok"), on_last=on_last)
    assert called.wait(5)
    assert rest == {} and handed == []
    assert after == [(sent_on[0], 1)]  # once, on the lane that sent, after the send


def test_a_task_popped_but_not_started_yet_is_looked_at_again_before_the_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between a lane's pop and its attempt's clock, a task is neither queued nor
    running; a supervisor that looked then slept until the next heartbeat, and a hang
    right after was timed out that late.  The gap is a few bytecodes; stretched here."""
    import chalicelib.execution.lanes as lanes

    real = lanes.run_attempt
    popped = threading.Event()

    def slow_to_start(entry: Any, payload: Any, ctx: TaskContext) -> Any:
        if ctx.name == "hang":
            popped.set()
            time.sleep(0.3)  # the supervisor, woken by the first outcome, looks now
        return real(entry, payload, ctx)

    monkeypatch.setattr(lanes, "run_attempt", slow_to_start)
    runner = BatchRunner(registry(), RetryPolicy(base_seconds=2, jitter=0), concurrency=1, max_result_bytes=1000)
    started = time.monotonic()
    try:
        outs = runner.run(
            [claimed("ok"), claimed("hang", timeout=0.5)],
            "tok",
            heartbeat=lambda ids: set(),
            heartbeat_every=HANG_SECONDS,
            on_outcomes=lambda outcomes: None,
        )
    finally:
        runner.close()
    assert popped.is_set()
    assert [o.error_type for o in outs] == ["TimeoutError"]
    assert time.monotonic() - started < HANG_SECONDS  # not the heartbeat's wake-up


def test_a_permanent_error_subclass_stays_permanent_across_the_lambda_boundary() -> None:
    """Lambda reports an error by its class name; the drainer decoded only three names
    as permanent, so a refused address (RefusedTarget) or a team's own PermanentError
    subclass was retried until its retries ran out, where inline mode failed at once."""
    import json

    from chalicelib.core.errors import PermanentError
    from chalicelib.execution.remote import decode_response

    task = {"id": "id-x", "name": "http-request", "tenant": "t", "attempt": 1, "max_retries": 3, "timeout_seconds": 5}
    with pytest.raises(PermanentError) as raised:  # refused before any connection is made
        handle({"tasklane": 1, "task": task, "payload": {"url": "http://169.254.169.254/"}}, None)
    exc = raised.value
    answer = json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
    with pytest.raises(PermanentError, match="RefusedTarget: refusing"):
        decode_response({"FunctionError": "Unhandled", "StatusCode": 200}, answer)


def test_a_task_that_would_outlast_the_invocation_is_handed_back_unstarted() -> None:
    """A drain Lambda ends for good with its time: a task started anyway was killed with
    it and ran again only after its lease expired, an attempt spent.  One longer than a
    whole invocation runs all the same: handed back, it would never run."""
    ran: list[str] = []
    reg = registry()

    @reg.task("long")
    def long(payload: Any, ctx: TaskContext) -> Any:
        ran.append(ctx.task_id)
        return "ran"

    runner = BatchRunner(reg, RetryPolicy(base_seconds=2, jitter=0), concurrency=4, max_result_bytes=1000)
    runner.window = Window(until=time.monotonic() + 90, fresh=100)
    try:
        outs = runner.run(
            [claimed("long", timeout=5), claimed("long", timeout=95), claimed("long", timeout=200)],
            "tok",
            heartbeat=lambda ids: set(),
            heartbeat_every=10.0,
        )
    finally:
        runner.close()
    statuses = sorted((o.status.value, o.snooze) for o in outs)
    assert statuses == [("COMPLETED", False), ("COMPLETED", False), ("PENDING", True)]
    back = next(o for o in outs if o.status is Status.PENDING)
    assert back.error_type == "Snoozed" and "handed back unstarted" in (back.error or "")
    assert back.delay_seconds == 0 and len(ran) == 2 and runner.handed_back == 1


def test_the_time_left_is_judged_when_a_lane_starts_the_task() -> None:
    """On one lane the second task starts after the first: with 1.5 s of the window left
    by then, its 1 s timeout still fits, and after the first's 1 s, not any more."""
    reg = registry()

    @reg.task("paced")
    def paced(payload: Any, ctx: TaskContext) -> Any:
        time.sleep(payload["p"])  # a task's own pace, not a wait for a condition
        return "ran"

    runner = BatchRunner(reg, RetryPolicy(base_seconds=2, jitter=0), concurrency=1, max_result_bytes=1000)
    runner.window = Window(until=time.monotonic() + 1.5, fresh=100)
    first = Claimed("a", "t", "paced", "normal", {"p": 1.0}, 1, 3, 1.2)
    second = Claimed("b", "t", "paced", "normal", {"p": 0.0}, 1, 3, 1.0)
    try:
        outs = runner.run([first, second], "tok", heartbeat=lambda ids: set(), heartbeat_every=10.0)
    finally:
        runner.close()
    by_id = {o.id: o for o in outs}
    assert by_id["a"].status is Status.COMPLETED
    assert by_id["b"].status is Status.PENDING and by_id["b"].snooze and runner.handed_back == 1
