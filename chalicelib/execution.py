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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import TaskCancelled
from chalicelib.executors import Registry, TaskContext
from chalicelib.retry import RetryPolicy, describe, is_permanent
from chalicelib.store import Outcome
from chalicelib.tasks import Status

# Heartbeat(ids of the batch whose outcomes are not recorded yet) -> ids whose
# cancellation was requested.
Heartbeat = Callable[[list[str]], set[str]]


@dataclass(frozen=True)
class Claimed:
    """A task the drainer holds under a lease."""

    id: str
    tenant: str
    name: str
    priority: str
    payload: Any
    attempts: int
    max_retries: int
    timeout_seconds: float
    enqueued_at_ms: float | None = None
    started_at_ms: float | None = None


class BatchRunner:
    """Executes batches with per-task timeouts, heartbeats and cancellation."""

    def __init__(self, registry: Registry, retry: RetryPolicy, *, concurrency: int = 8) -> None:
        self.registry = registry
        self.retry = retry
        self.concurrency = concurrency
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
        running: dict[Future[Any], tuple[Claimed, TaskContext]] = {}
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
            )
            running[self._pool.submit(_call, entry.run, entry.validate, task.payload, ctx)] = (task, ctx)

        abandoned = False
        next_beat = time.monotonic() + heartbeat_every
        pending = set(running)
        while pending:
            now = time.monotonic()
            wake_at = next_beat
            for fut in pending:
                ctx = running[fut][1]
                if ctx.started_monotonic > 0:
                    wake_at = min(wake_at, ctx.started_monotonic + ctx.timeout_seconds)
            done, pending = wait(pending, timeout=max(wake_at - now, 0.0), return_when=ALL_COMPLETED)
            for fut in done:
                task, ctx = running[fut]
                outcomes.append(self._outcome(task, token, fut))
            now = time.monotonic()
            for fut in list(pending):
                task, ctx = running[fut]
                if ctx.started_monotonic > 0 and now - ctx.started_monotonic > ctx.timeout_seconds:
                    pending.discard(fut)
                    ctx.request_cancel()  # a cooperative executor stops; the result is ignored anyway
                    abandoned = True
                    outcomes.append(
                        self._failure(task, token, TimeoutError(f"attempt exceeded {ctx.timeout_seconds:g} s"))
                    )
            if pending and now >= next_beat:
                # Finished tasks keep their leases too: their outcomes are recorded with
                # the whole batch, so they wait for the slowest one.
                for cancelled_id in heartbeat([t.id for t in batch]):
                    for f in pending:
                        if running[f][0].id == cancelled_id:
                            running[f][1].request_cancel()
                next_beat = now + heartbeat_every
        if abandoned:
            # A stuck thread keeps its pool slot: start a fresh pool for the next batch.
            self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tasklane-exec")
        return outcomes

    def _outcome(self, task: Claimed, token: str, fut: Future[Any]) -> Outcome:
        exc = fut.exception()
        if exc is None:
            try:
                result_json = json.dumps(fut.result(), separators=(",", ":"))
            except (TypeError, ValueError) as err:
                return Outcome(
                    task.id, token, Status.FAILED, error=f"result is not JSON: {err}", error_type="ResultError"
                )
            return Outcome(task.id, token, Status.COMPLETED, result_json=result_json)
        if isinstance(exc, TaskCancelled):
            message, kind = describe(exc)
            return Outcome(task.id, token, Status.CANCELLED, error=message, error_type=kind)
        return self._failure(task, token, exc)

    def _failure(self, task: Claimed, token: str, exc: BaseException) -> Outcome:
        return failure_outcome(self.retry, task.id, token, task.attempts, task.max_retries, exc)


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
    if validate is not None:
        validate(payload)
    return run(payload, ctx)
