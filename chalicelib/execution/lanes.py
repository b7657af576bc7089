"""The lanes a batch runs on: a few pool jobs work through the batch's shared queue.

One job per lane instead of one future per task keeps the per-task cost of tiny
tasks to a queue pop and a counter, and the supervising thread wakes once when
the whole batch is done, or at a heartbeat or a task's deadline.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from chalicelib.core.model import Claimed
from chalicelib.execution.attempt import run_attempt
from chalicelib.tasktypes.catalog import Registered
from chalicelib.tasktypes.context import TaskContext


class Item:
    """One task of a batch on its way through a lane."""

    __slots__ = ("ctx", "done", "entry", "error", "task", "timed_out", "value")

    def __init__(self, task: Claimed, entry: Registered, ctx: TaskContext) -> None:
        self.task = task
        self.entry = entry
        self.ctx = ctx
        self.done = False
        self.timed_out = False
        self.value: Any = None
        self.error: BaseException | None = None

    def overdue(self, now: float) -> bool:
        """Started, not finished, and past its timeout (call with the state's lock held)."""
        started = self.ctx.started_monotonic
        return not self.done and started > 0 and now - started > self.ctx.timeout_seconds


class BatchState:
    """The queue the lanes share, and how many tasks are not finished yet."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.queue: deque[Item] = deque(items)
        self.remaining = len(items)
        self.lock = threading.Lock()
        self.all_done = threading.Event()

    def finish(self, item: Item) -> None:
        """Mark ``item`` decided (with the lock held); wakes the supervisor after the last."""
        item.done = True
        self.remaining -= 1
        if self.remaining == 0:
            self.all_done.set()


def lane(state: BatchState) -> None:
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
            value = run_attempt(item.entry, item.task.payload, item.ctx)
        except BaseException as exc:  # noqa: BLE001 - recorded as the attempt's outcome, as a future would
            error = exc
        with state.lock:
            if item.done:  # timed out meanwhile: the outcome is already decided
                continue
            item.value = value
            item.error = error
            state.finish(item)
