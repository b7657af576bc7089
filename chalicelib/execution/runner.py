"""Runs a claimed batch of tasks through their task types.

Task types run on a small thread pool (``lanes``) so I/O-bound work (HTTP calls,
email) overlaps.  The calling thread supervises: it times out attempts that
exceed ``timeout_seconds`` (Python cannot kill a thread, so a timed-out attempt
is recorded as failed and its thread abandoned: whatever it returns later is
ignored and the pool is replaced), and it heartbeats the batch's leases so long
work keeps them while short-lived drainers lose them quickly when they die.
Claiming and recording belong to the drain use case; turning an attempt's end
into an ``Outcome`` to ``outcomes``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from chalicelib.core.model import Claimed, Outcome
from chalicelib.core.retry import RetryPolicy
from chalicelib.execution.lanes import BatchState, Item, lane
from chalicelib.execution.outcomes import Outcomes
from chalicelib.tasktypes.catalog import Registry
from chalicelib.tasktypes.context import NO_PORTS, TaskContext, TaskPorts

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
        ports: TaskPorts = NO_PORTS,
    ) -> None:
        self.registry = registry
        self.outcomes = Outcomes(retry, max_result_bytes)
        self.concurrency = concurrency
        self.ports = ports
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
        """Run ``batch`` (held under lease ``token``) and return one outcome per task."""
        items, outcomes = self._prepare(batch, token)
        if items:
            state = BatchState(items)
            self._start_lanes(state, min(self.concurrency, len(items)))
            self._supervise(state, [t.id for t in batch], heartbeat, heartbeat_every)
            outcomes.extend(self._collect(items, token))
        return outcomes

    def _prepare(self, batch: Sequence[Claimed], token: str) -> tuple[list[Item], list[Outcome]]:
        """An ``Item`` per task with a registered type; an outcome for the others."""
        items: list[Item] = []
        outcomes: list[Outcome] = []
        for task in batch:
            entry = self.registry.get(task.name)
            if entry is None:
                outcomes.append(self.outcomes.unknown_task(task, token))
                continue
            ctx = TaskContext(
                task_id=task.id,
                name=task.name,
                tenant=task.tenant,
                attempt=task.attempts,
                max_retries=task.max_retries,
                timeout_seconds=task.timeout_seconds,
                ports=self.ports,
                lease_token=token,
            )
            items.append(Item(task, entry, ctx))
        return items, outcomes

    def _supervise(self, state: BatchState, batch_ids: list[str], heartbeat: Heartbeat, every: float) -> None:
        """Wait for the batch, waking at each deadline to time out overdue attempts and
        at each heartbeat to keep the leases (and hear about cancellations)."""
        shortest = min(item.ctx.timeout_seconds for item in state.items)
        next_beat = time.monotonic() + every
        while True:
            wake_at = self._next_wake(state, next_beat, shortest)
            if wake_at is None:
                return
            state.all_done.wait(max(wake_at - time.monotonic(), 0.0))
            now = time.monotonic()
            self._expire_overdue(state, now)
            if now >= next_beat:
                self._beat(state, batch_ids, heartbeat)
                next_beat = now + every

    @staticmethod
    def _next_wake(state: BatchState, next_beat: float, shortest: float) -> float | None:
        """The next moment something may be due, or None once every task is decided."""
        now = time.monotonic()
        wake_at = next_beat
        with state.lock:
            if state.remaining == 0:
                return None
            unstarted = bool(state.queue)
            running = [i for i in state.items if not i.done and i.ctx.started_monotonic > 0]
        for item in running:
            wake_at = min(wake_at, item.ctx.started_monotonic + item.ctx.timeout_seconds)
        if unstarted:
            # Tasks still queued start later: look again within the shortest timeout.
            wake_at = min(wake_at, now + shortest)
        return wake_at

    def _expire_overdue(self, state: BatchState, now: float) -> None:
        """Decide overdue attempts as timed out; give the queue's rest fresh lanes."""
        stuck = 0
        with state.lock:
            for item in state.items:
                if item.overdue(now):
                    # Python cannot stop the thread: record the attempt as failed, ignore
                    # whatever it returns later, and let another lane take the queue.
                    item.timed_out = True
                    state.finish(item)
                    stuck += 1
                    item.ctx.request_cancel()  # a cooperative task type stops
            queued = len(state.queue)
        if stuck:
            # The stuck threads keep their pool slots: later batches get a fresh pool,
            # and this batch's queued tasks get fresh lanes now.
            self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tasklane-exec")
            if queued:
                self._start_lanes(state, min(self.concurrency, queued))

    @staticmethod
    def _beat(state: BatchState, batch_ids: list[str], heartbeat: Heartbeat) -> None:
        """Extend the leases and pass cancellation requests to the attempts still running."""
        with state.lock:
            pending = [i for i in state.items if not i.done]
        if not pending:
            return
        # Finished tasks keep their leases too: their outcomes are recorded with the
        # whole batch, so they wait for the slowest one.
        cancelled = heartbeat(batch_ids)
        for item in pending:
            if item.task.id in cancelled:
                item.ctx.request_cancel()

    def _start_lanes(self, state: BatchState, lanes: int) -> None:
        for _ in range(lanes):
            self._pool.submit(lane, state)

    def _collect(self, items: list[Item], token: str) -> list[Outcome]:
        """The outcomes in batch order, once every item is decided."""
        return [
            self.outcomes.timed_out(item.task, token)
            if item.timed_out
            else self.outcomes.ended(item.task, token, item.value, item.error)
            for item in items
        ]
