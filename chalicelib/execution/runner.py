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

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from chalicelib.core.model import Claimed, Outcome
from chalicelib.core.retry import RetryPolicy
from chalicelib.execution.lanes import BatchState, Item, SendLast, lane
from chalicelib.execution.outcomes import Outcomes
from chalicelib.execution.window import HandedBack, Window
from chalicelib.tasktypes.catalog import Registry
from chalicelib.tasktypes.context import NO_PORTS, TaskContext, TaskPorts

# Heartbeat(ids of the batch whose outcomes are not recorded yet) -> ids whose
# cancellation was requested.
Heartbeat = Callable[[list[str]], set[str]]
# Receives outcomes decided before the rest of their batch (see ``BatchRunner.run``).
OutcomeSink = Callable[[list[Outcome]], None]
# Receives a batch's last outcomes on the lane that decided them (``BatchRunner.run``'s
# ``on_last``); may return what that lane calls once the batch counts as finished.
LastSink = Callable[[list[Outcome]], Callable[[], object] | None]

# How long a decided outcome waits for its batch's other tasks before it is handed
# over on its own.  A batch of quick tasks ends within this and is recorded with one
# statement, as before; a quick task beside a slow one is recorded ~this much after
# it ends instead of when the slow one does.
HAND_OVER_AFTER_SECONDS = 0.005

# How often a thread in ``run_read`` looks for the batch a lane reads.  The lane does
# not wake it for the batch (woken beside the task's start, it would compete for the
# GIL with it): it wakes at the batch's end, at its first decided outcome, or by this,
# and then supervises.  A longer task is supervised from this long after its start.
LAUNCH_LOOK_SECONDS = 0.05


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
        # The drain Lambda invocation's time, set by its drainer before each batch (None:
        # a process with a budget, not a hard end): a task that would outlast it is
        # handed back unstarted (``execution/window.py``).
        self.window: Window | None = None
        self.handed_back = 0  # how many so far
        self._count_lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(
        self,
        batch: Sequence[Claimed],
        token: str,
        *,
        heartbeat: Heartbeat,
        heartbeat_every: float,
        on_outcomes: OutcomeSink | None = None,
        on_last: LastSink | None = None,
    ) -> list[Outcome]:
        """Run ``batch`` (held under lease ``token``) and return one outcome per task.

        With ``on_outcomes``, outcomes decided while other tasks of the batch still run
        are passed to it (on this thread) once they have waited
        ``HAND_OVER_AFTER_SECONDS``.  With ``on_last``, the lane thread that decides the
        batch's last outcome passes it, with any others not handed over yet, to
        ``on_last`` itself, before this thread wakes: the drainer sends their finish
        statement from there, without the lane's wake-up of this thread on the way
        (issue 14, round 19).  Should ``on_last`` raise, they are returned instead.
        What ``on_last`` returns, if anything, that lane calls once the batch counts as
        finished (the drainer reads the finish's answer there).  The rest are returned."""
        items, outcomes = self._prepare(batch, token)
        if items:
            state = BatchState(items, self._last(on_last, token), window=self.window)
            self._start_lanes(state, min(self.concurrency, len(items)))
            self._supervised(state, batch, token, heartbeat, heartbeat_every, on_outcomes, outcomes)
        return outcomes

    def run_read(
        self,
        read: Callable[[], Sequence[Claimed]],
        token: str,
        *,
        heartbeat: Heartbeat,
        heartbeat_every: float,
        on_outcomes: OutcomeSink | None = None,
        on_last: LastSink | None = None,
    ) -> tuple[list[Claimed], list[Outcome]]:
        """``run`` for the batch ``read()`` returns, and that batch: ``read`` is called on
        a lane, which starts the batch's other lanes and then runs tasks itself, so the
        first task starts on the thread that read its claim, without a wake-up of
        another thread in between (``adapters/postgres/sent_claim.py``).  This thread
        waits, and raises what ``read`` raised."""
        launch = _Launch()
        self._pool.submit(self._launched, launch, read, token, self._last(on_last, token))
        state = launch.wait()
        if state is not None:
            self._supervised(state, launch.batch, token, heartbeat, heartbeat_every, on_outcomes, launch.outcomes)
        return launch.batch, launch.outcomes

    def _launched(
        self, launch: _Launch, read: Callable[[], Sequence[Claimed]], token: str, last: SendLast | None
    ) -> None:
        """``run_read``'s lane: read the batch, publish it, start the other lanes, run."""
        try:
            batch = list(read())
            items, outcomes = self._prepare(batch, token)
        except BaseException as exc:  # noqa: BLE001 - raised again on the supervising thread
            launch.failed(exc)
            return
        state = BatchState(items, last, launch.wake, self.window) if items else None
        # Published before the other lanes start: the supervisor may replace the pool
        # only once a task it can see overran, and none has started yet.
        pool = self._pool
        launch.publish(batch, outcomes, state)
        if state is not None:
            for _ in range(min(self.concurrency, len(items)) - 1):
                pool.submit(lane, state)
            lane(state)

    def _last(self, on_last: LastSink | None, token: str) -> SendLast | None:
        return None if on_last is None else (lambda taken: on_last(self._collect(taken, token)))

    def _supervised(
        self,
        state: BatchState,
        batch: Sequence[Claimed],
        token: str,
        heartbeat: Heartbeat,
        heartbeat_every: float,
        on_outcomes: OutcomeSink | None,
        outcomes: list[Outcome],
    ) -> None:
        """Supervise ``state`` until its batch is decided; its outcomes not handed over
        (early, or by ``on_last``) are added to ``outcomes``."""
        early = None
        if on_outcomes is not None:
            early = _Early(on_outcomes, lambda decided: self._collect(decided, token))
        self._supervise(state, [t.id for t in batch], heartbeat, heartbeat_every, early)
        outcomes.extend(self._collect([i for i in state.items if not i.handed_over], token))

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
                trace_context=task.trace_context,
                parent_results=task.parent_results,
            )
            items.append(Item(task, entry, ctx))
        return items, outcomes

    def _supervise(
        self, state: BatchState, batch_ids: list[str], heartbeat: Heartbeat, every: float, early: _Early | None
    ) -> None:
        """Wait for the batch, waking at each deadline to time out overdue attempts, at
        each heartbeat to keep the leases (and hear about cancellations), and to hand
        over outcomes that have waited long enough for their siblings."""
        shortest = min(item.ctx.timeout_seconds for item in state.items)
        next_beat = time.monotonic() + every
        while True:
            wake_at = self._next_wake(state, next_beat, shortest)
            if wake_at is None:
                return
            since = state.decided_since
            if early is not None and since is not None:
                wake_at = min(wake_at, since + HAND_OVER_AFTER_SECONDS)
            state.wake.wait(max(wake_at - time.monotonic(), 0.0))
            state.wake.clear()  # the loop re-reads the state, so a set lost here is harmless
            now = time.monotonic()
            self._expire_overdue(state, now)
            if early is not None:
                early.hand_over(state, now)
            if now >= next_beat:
                self._beat(state, batch_ids, heartbeat)
                next_beat = now + every

    @staticmethod
    def _next_wake(state: BatchState, next_beat: float, shortest: float) -> float | None:
        """The next moment something may be due, or None once every task is decided."""
        now = time.monotonic()
        wake_at = next_beat
        running: list[Item] = []
        unstarted = False
        with state.lock:
            if state.remaining == 0:
                return None
            # Not started is not only still queued: a lane pops a task before its attempt
            # starts the clock, and a task seen in between must count as one to look at
            # again soon, or a hang that starts right after is timed out a heartbeat late.
            for item in state.items:
                if not item.done:
                    if item.ctx.started_monotonic > 0:
                        running.append(item)
                    else:
                        unstarted = True
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
            handed_over = {i.task.id for i in state.items if i.handed_over}
        if not pending:
            return
        # Decided tasks not handed over keep their leases too: their outcomes are
        # recorded with the rest of the batch.
        cancelled = heartbeat([i for i in batch_ids if i not in handed_over])
        for item in pending:
            if item.task.id in cancelled:
                item.ctx.request_cancel()

    def _start_lanes(self, state: BatchState, lanes: int) -> None:
        for _ in range(lanes):
            self._pool.submit(lane, state)

    def _collect(self, items: list[Item], token: str) -> list[Outcome]:
        """The outcomes in batch order, once every item is decided."""
        back = sum(1 for item in items if isinstance(item.error, HandedBack))
        if back:
            with self._count_lock:  # lanes and the supervisor collect
                self.handed_back += back
        return [
            self.outcomes.timed_out(item.task, token)
            if item.timed_out
            else self.outcomes.ended(item.task, token, item.value, item.error)
            for item in items
        ]


class _Early:
    """Hands decided outcomes to ``sink`` before their batch ends (``BatchRunner.run``)."""

    def __init__(self, sink: OutcomeSink, collect: Callable[[list[Item]], list[Outcome]]) -> None:
        self.sink = sink
        self.collect = collect

    def hand_over(self, state: BatchState, now: float) -> None:
        with state.lock:
            since = state.decided_since
            if state.remaining == 0 or since is None or now - since < HAND_OVER_AFTER_SECONDS:
                return  # the batch's end collects them, or they may wait a little longer
            taken = state.take_decided()
        if taken:
            self.sink(self.collect(taken))


class _Launch:
    """What ``run_read``'s lane found: its batch, or the error reading it raised."""

    def __init__(self) -> None:
        self.wake = threading.Event()  # the batch's ``BatchState.wake`` too
        self.ready = False
        self.batch: list[Claimed] = []
        self.outcomes: list[Outcome] = []
        self.state: BatchState | None = None
        self.error: BaseException | None = None

    def publish(self, batch: list[Claimed], outcomes: list[Outcome], state: BatchState | None) -> None:
        self.batch, self.outcomes, self.state = batch, outcomes, state
        self.ready = True
        if state is None:
            self.wake.set()  # nothing to run: nothing else would wake the supervisor

    def failed(self, error: BaseException) -> None:
        self.error = error
        self.ready = True
        self.wake.set()

    def wait(self) -> BatchState | None:
        """The published batch's state (None: nothing to run), or the error raised."""
        while not self.ready:
            self.wake.wait(LAUNCH_LOOK_SECONDS)
        if self.error is not None:
            raise self.error
        return self.state
