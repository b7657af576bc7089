"""The lanes a batch runs on: a few pool jobs work through the batch's shared queue.

One job per lane instead of one future per task keeps the per-task cost of tiny
tasks to a queue pop and a counter.  The supervising thread wakes when the whole
batch is done, at a heartbeat or a task's deadline, and when the first outcome
since its last look is decided (so a quick task's outcome need not wait for a
slow sibling: see ``BatchRunner``); not once per task.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from chalicelib.core.model import Claimed
from chalicelib.execution.attempt import run_attempt
from chalicelib.execution.window import Window
from chalicelib.tasktypes.catalog import Registered
from chalicelib.tasktypes.context import TaskContext

# Receives the decided items of a batch's last outcome (``BatchState.send_last``); may
# return what its lane calls once the batch counts as finished.
SendLast = Callable[[list["Item"]], Callable[[], object] | None]


class Item:
    """One task of a batch on its way through a lane."""

    __slots__ = ("ctx", "done", "entry", "error", "handed_over", "task", "timed_out", "value")

    def __init__(self, task: Claimed, entry: Registered, ctx: TaskContext) -> None:
        self.task = task
        self.entry = entry
        self.ctx = ctx
        self.done = False
        self.handed_over = False  # its outcome left the batch early (BatchRunner.run's on_outcomes)
        self.timed_out = False
        self.value: Any = None
        self.error: BaseException | None = None

    def overdue(self, now: float) -> bool:
        """Started, not finished, and past its timeout (call with the state's lock held)."""
        started = self.ctx.started_monotonic
        return not self.done and started > 0 and now - started > self.ctx.timeout_seconds


class BatchState:
    """The queue the lanes share, and how many tasks are not finished yet."""

    def __init__(
        self,
        items: list[Item],
        send_last: SendLast | None = None,
        wake: threading.Event | None = None,
        window: Window | None = None,
    ) -> None:
        self.items = items
        self.window = window  # a drain Lambda invocation's time: see execution/window.py
        # Called on the lane that decides the batch's last outcome, with the decided items
        # not handed over yet, before the supervisor wakes (``BatchRunner.run``'s on_last);
        # what it returns, that lane calls once the batch counts as finished.
        self.send_last = send_last
        self.queue: deque[Item] = deque(items)
        self.remaining = len(items)
        self.lock = threading.Lock()
        # Set after the last task, and by the first task decided since the supervisor
        # last took the decided ones (``decided_since``): at most one wake-up per look.
        self.wake = wake if wake is not None else threading.Event()
        self.decided_since: float | None = None

    def finish(self, item: Item) -> None:
        """Mark ``item`` decided (with the lock held) and wake the supervisor if due."""
        item.done = True
        self.remaining -= 1
        if self.remaining == 0:
            self.wake.set()
        elif self.decided_since is None:
            self.decided_since = time.monotonic()
            self.wake.set()

    def take_decided(self) -> list[Item]:
        """The decided items not handed over yet, now marked handed over (lock held)."""
        self.decided_since = None
        taken = [i for i in self.items if i.done and not i.handed_over]
        for i in taken:
            i.handed_over = True
        return taken


def lane(state: BatchState) -> None:
    """Run queued tasks one after another until the batch's queue is empty."""
    queue = state.queue
    while True:
        try:
            item = queue.popleft()
        except IndexError:
            return
        value: Any = None
        window = state.window
        error: BaseException | None = None if window is None else window.refusal(item.ctx.timeout_seconds)
        if error is None:
            try:
                value = run_attempt(item.entry, item.task.payload, item.ctx)
            except BaseException as exc:  # noqa: BLE001 - recorded as the attempt's outcome, as a future would
                error = exc
        with state.lock:
            if item.done:  # timed out meanwhile: the outcome is already decided
                continue
            item.value = value
            item.error = error
            if state.send_last is None or state.remaining > 1:
                state.finish(item)
                continue
            # The batch's last outcome: decided now (no timeout can take it) and taken
            # with the others not handed over (nor can the early hand-over), but the
            # batch counts as finished, and the supervisor wakes, only once they are sent.
            item.done = True
            taken = state.take_decided()
        after: Callable[[], object] | None = None
        try:
            after = state.send_last(taken)
        except BaseException:  # noqa: BLE001 - left to the supervisor's collection instead
            for i in taken:
                i.handed_over = False
        with state.lock:
            state.remaining -= 1
            state.wake.set()
        if after is not None:
            after()
