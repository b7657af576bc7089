"""``BatchRunner.run_read``: the batch is read on a lane, which goes on to run it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from chalicelib.core.errors import UnavailableError
from chalicelib.core.model import Claimed, Status
from chalicelib.core.retry import RetryPolicy
from chalicelib.execution import runner as runner_module
from chalicelib.execution.runner import BatchRunner
from chalicelib.tasktypes import Registry, TaskContext

HANG_SECONDS = 30


def registry(ran_on: list[tuple[str, int]]) -> Registry:
    reg = Registry()

    @reg.task("ok")
    def ok(payload: Any, ctx: TaskContext) -> Any:
        ran_on.append((ctx.task_id, threading.get_ident()))
        return {"echo": payload}

    @reg.task("slow")
    def slow(payload: Any, ctx: TaskContext) -> Any:
        ran_on.append((ctx.task_id, threading.get_ident()))
        ctx.wait(0.3)
        return "slow"

    @reg.task("hang")
    def hang(payload: Any, ctx: TaskContext) -> Any:
        ran_on.append((ctx.task_id, threading.get_ident()))
        ctx.wait(HANG_SECONDS)
        return "too late"

    return reg


def claimed(task_id: str, name: str, timeout: float = 5) -> Claimed:
    return Claimed(task_id, "t", name, "normal", {"p": 1}, 1, 3, timeout)


def run_read(read: Any, *, on_last: Any = None, concurrency: int = 4) -> tuple[Any, ...]:
    """Runs ``run_read``; returns the batch, the outcomes returned, what ``on_last`` and
    the early sink got, where each task ran, and the caller's thread."""
    ran_on: list[tuple[str, int]] = []
    handed: list[str] = []
    runner = BatchRunner(registry(ran_on), RetryPolicy(base_seconds=2, jitter=0), concurrency=concurrency)
    try:
        batch, outs = runner.run_read(
            read,
            "tok",
            heartbeat=lambda ids: set(),
            heartbeat_every=10.0,
            on_outcomes=lambda got: handed.extend(o.id for o in got),
            on_last=on_last,
        )
    finally:
        runner.close()
    return batch, {o.id: o for o in outs}, handed, dict(ran_on), threading.get_ident()


def test_the_lane_that_reads_the_batch_runs_its_first_task_and_sends_its_last_outcome() -> None:
    read_on: list[int] = []
    sent: list[tuple[int, list[str], list[Status]]] = []

    def read() -> list[Claimed]:
        read_on.append(threading.get_ident())
        return [claimed("a", "ok")]

    def on_last(got: list[Any]) -> None:
        sent.append((threading.get_ident(), [o.id for o in got], [o.status for o in got]))

    batch, rest, handed, ran_on, caller = run_read(read, on_last=on_last)
    assert [t.id for t in batch] == ["a"]
    assert read_on[0] != caller and ran_on["a"] == read_on[0]  # no other thread in between
    assert sent == [(read_on[0], ["a"], [Status.COMPLETED])]
    assert rest == {} and handed == []


def test_a_larger_batch_runs_on_more_lanes_and_every_outcome_leaves_once() -> None:
    tasks = [claimed("slow", "slow")] + [claimed(f"id-{i}", "ok") for i in range(10)]
    sent: list[str] = []
    started = time.monotonic()
    batch, rest, handed, ran_on, _ = run_read(lambda: tasks, on_last=lambda got: sent.extend(o.id for o in got))
    assert len(batch) == 11 and set(ran_on) == {t.id for t in tasks}
    assert len(set(ran_on.values())) > 1  # the quick ones did not wait behind the slow one
    assert time.monotonic() - started < 2
    everything = handed + sent + list(rest)
    assert sorted(everything) == sorted(t.id for t in tasks) and len(everything) == 11


def test_an_error_reading_the_batch_is_raised_on_the_calling_thread() -> None:
    def read() -> list[Claimed]:
        raise UnavailableError("PostgreSQL went away")

    with pytest.raises(UnavailableError, match="went away"):
        run_read(read)


def test_an_empty_batch_runs_nothing() -> None:
    batch, rest, handed, ran_on, _ = run_read(lambda: [])
    assert batch == [] and rest == {} and handed == [] and ran_on == {}


def test_a_slow_read_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    # The caller looks for the batch every LAUNCH_LOOK_SECONDS: a read that takes
    # several looks (a claim waiting for a submit's commit) is still waited for.
    monkeypatch.setattr(runner_module, "LAUNCH_LOOK_SECONDS", 0.01)

    def read() -> list[Claimed]:
        time.sleep(0.1)
        return [claimed("a", "ok")]

    batch, rest, _, ran_on, _ = run_read(read)
    assert [t.id for t in batch] == ["a"] and set(ran_on) == {"a"} and rest["a"].status is Status.COMPLETED


def test_a_first_task_that_hangs_is_timed_out_and_its_lane_abandoned() -> None:
    # The lane that read the batch runs the hanging task; the caller, which the lane
    # did not wake for the batch, still times it out (and the other task still runs).
    started = time.monotonic()
    _, rest, handed, ran_on, _ = run_read(lambda: [claimed("h", "hang", timeout=0.3), claimed("b", "ok")])
    assert time.monotonic() - started < HANG_SECONDS / 2
    assert rest["h"].status is Status.PENDING and rest["h"].error_type == "TimeoutError"
    assert handed == ["b"] and set(ran_on) == {"h", "b"}  # handed over early, beside the hang
