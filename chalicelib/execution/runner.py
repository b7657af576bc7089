"""Runs a claimed batch of tasks through their executors.

Executors run on a small thread pool so I/O-bound work (HTTP calls, email)
overlaps.  The calling thread watches the clock: it times out attempts that
exceed ``timeout_seconds`` (Python cannot kill a thread, so a timed-out attempt
is recorded as failed and its thread abandoned: whatever it returns later is
ignored and the pool is replaced), and it heartbeats the batch's leases so long
work keeps them while short-lived drainers lose them quickly when they die.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib.core.errors import TaskCancelled
from chalicelib.core.model import Claimed, Outcome, Status
from chalicelib.core.retry import RetryPolicy, describe, is_permanent
from chalicelib.observability.powertools import task_log_context
from chalicelib.tasktypes import Registry, TaskContext

# Heartbeat(ids of the batch whose outcomes are not recorded yet) -> ids whose
# cancellation was requested.
Heartbeat = Callable[[list[str]], set[str]]


class BatchRunner:
    """Executes batches with per-task timeouts, heartbeats and cancellation."""

    def __init__(
        self,
        registry: Registry,
        retry: RetryPolicy,
        *,
        concurrency: int = 8,
        max_result_bytes: int = 262144,
        services: Any = None,
    ) -> None:
        self.registry = registry
        self.retry = retry
        self.concurrency = concurrency
        self.max_result_bytes = max_result_bytes
        self.services = services
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="tasklane-exec")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(
        self,
        batch: Sequence[Claimed],
        token: str,
        *,
        heartbeat: Heartbeat,
        heartbeat_every: float,
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        items: list[_Item] = []
        for task in batch:
            entry = self.registry.get(task.name)
            if entry is None:
                outcomes.append(
                    Outcome(
                        task.id,
                        token,
                        Status.FAILED,
                        error=f"no executor is registered for task name {task.name!r}",
                        error_type="UnknownTaskName",
                    )
                )
                continue
            ctx = TaskContext(
                task_id=task.id,
                name=task.name,
                tenant=task.tenant,
                attempt=task.attempts,
                max_retries=task.max_retries,
                timeout_seconds=task.timeout_seconds,
                services=self.services,
                lease_token=token,
            )
            items.append(_Item(task, entry.run, entry.validate, ctx))
        if not items:
            return outcomes

        # A few "lanes" (one pool job each) work through the batch's shared queue:
        # one job per lane instead of one future per task keeps the per-task cost of
        # tiny tasks to a queue pop and a counter, and the calling thread wakes once
        # when the whole batch is done, or at a heartbeat or a task's deadline.
        state = _BatchState(items)
        self._start_lanes(state, min(self.concurrency, len(items)))
        shortest = min(item.ctx.timeout_seconds for item in items)
        next_beat = time.monotonic() + heartbeat_every
        while True:
            now = time.monotonic()
            wake_at = next_beat
            with state.lock:
                if state.remaining == 0:
                    break
                unstarted = bool(state.queue)
                running = [i for i in items if not i.done and i.ctx.started_monotonic > 0]
            for item in running:
                wake_at = min(wake_at, item.ctx.started_monotonic + item.ctx.timeout_seconds)
            if unstarted:
                # Tasks still queued start later: look again within the shortest timeout.
                wake_at = min(wake_at, now + shortest)
            state.all_done.wait(max(wake_at - now, 0.0))
            now = time.monotonic()
            stuck = 0
            with state.lock:
                for item in items:
                    ctx = item.ctx
                    if (
                        not item.done
                        and ctx.started_monotonic > 0
                        and now - ctx.started_monotonic > ctx.timeout_seconds
                    ):
                        # Python cannot stop the thread: record the attempt as failed, ignore
                        # whatever it returns later, and let another lane take the queue.
                        item.done = True
                        item.timed_out = True
                        state.remaining -= 1
                        stuck += 1
                        ctx.request_cancel()  # a cooperative executor stops
                if state.remaining == 0:
                    state.all_done.set()
                pending = [i for i in items if not i.done]
                more = bool(state.queue)
            if stuck:
                # The stuck threads keep their pool slots: later batches get a fresh pool,
                # and this batch's queued tasks get fresh lanes now.
                self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tasklane-exec")
                if more:
                    self._start_lanes(state, min(self.concurrency, len(state.queue)))
            if pending and now >= next_beat:
                # Finished tasks keep their leases too: their outcomes are recorded with
                # the whole batch, so they wait for the slowest one.
                cancelled = heartbeat([t.id for t in batch])
                for item in pending:
                    if item.task.id in cancelled:
                        item.ctx.request_cancel()
                next_beat = now + heartbeat_every
        for item in items:
            if item.timed_out:
                outcomes.append(
                    self._failure(item.task, token, TimeoutError(f"attempt exceeded {item.ctx.timeout_seconds:g} s"))
                )
            else:
                outcomes.append(self._outcome(item.task, token, item.value, item.error))
        return outcomes

    def _start_lanes(self, state: _BatchState, lanes: int) -> None:
        for _ in range(lanes):
            self._pool.submit(_lane, state)

    def _outcome(self, task: Claimed, token: str, value: Any, exc: BaseException | None) -> Outcome:
        if exc is None:
            try:
                result_json = json.dumps(value, separators=(",", ":"))
            except (TypeError, ValueError) as err:
                return Outcome(
                    task.id, token, Status.FAILED, error=f"result is not JSON: {err}", error_type="ResultError"
                )
            if len(result_json) > self.max_result_bytes:
                return Outcome(
                    task.id,
                    token,
                    Status.FAILED,
                    error=f"result is {len(result_json)} bytes; the limit is {self.max_result_bytes}"
                    " (store large outputs elsewhere, e.g. S3, and return a reference)",
                    error_type="ResultTooLarge",
                )
            return Outcome(task.id, token, Status.COMPLETED, result_json=result_json)
        if isinstance(exc, TaskCancelled):
            message, kind = describe(exc)
            return Outcome(task.id, token, Status.CANCELLED, error=message, error_type=kind)
        return self._failure(task, token, exc)

    def _failure(self, task: Claimed, token: str, exc: BaseException) -> Outcome:
        return failure_outcome(self.retry, task.id, token, task.attempts, task.max_retries, exc)


class _Item:
    """One task of a batch on its way through a lane."""

    __slots__ = ("ctx", "done", "error", "run", "task", "timed_out", "validate", "value")

    def __init__(self, task: Claimed, run: Callable[[Any, TaskContext], Any], validate: Any, ctx: TaskContext) -> None:
        self.task = task
        self.run = run
        self.validate = validate
        self.ctx = ctx
        self.done = False
        self.timed_out = False
        self.value: Any = None
        self.error: BaseException | None = None


class _BatchState:
    """The queue the lanes share, and how many tasks are not finished yet."""

    def __init__(self, items: list[_Item]) -> None:
        self.queue: deque[_Item] = deque(items)
        self.remaining = len(items)
        self.lock = threading.Lock()
        self.all_done = threading.Event()


def _lane(state: _BatchState) -> None:
    """Run queued tasks one after another until the batch's queue is empty."""
    queue = state.queue
    while True:
        try:
            item = queue.popleft()
        except IndexError:
            return
        value: Any = None
        error: BaseException | None = None
        try:
            value = _call(item.run, item.validate, item.task.payload, item.ctx)
        except BaseException as exc:  # noqa: BLE001 - recorded as the attempt's outcome, as a future would
            error = exc
        with state.lock:
            if item.done:  # timed out meanwhile: the outcome is already decided
                continue
            item.value = value
            item.error = error
            item.done = True
            state.remaining -= 1
            if state.remaining == 0:
                state.all_done.set()


def failure_outcome(
    policy: RetryPolicy, task_id: str, token: str, attempts: int, max_retries: int, exc: BaseException
) -> Outcome:
    """The outcome of a failed attempt: a retry after backoff, or FAILED."""
    message, kind = describe(exc)
    status = policy.next_status(attempts, max_retries, is_permanent(exc))
    delay = policy.backoff(attempts) if status is Status.PENDING else None
    return Outcome(task_id, token, status, error=message, error_type=kind, delay_seconds=delay)


def _call(run: Callable[[Any, TaskContext], Any], validate: Any, payload: Any, ctx: TaskContext) -> Any:
    ctx.started_monotonic = time.monotonic()
    if ctx.cancel_requested:
        raise TaskCancelled("cancelled before it started")
    with task_log_context(ctx.task_id, ctx.name, ctx.tenant, ctx.attempt):  # every log line names the task
        if validate is not None:
            validate(payload)
        return run(payload, ctx)
