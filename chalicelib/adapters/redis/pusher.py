"""Redis pushes off the submitting thread (``TASKLANE_SUBMIT_PUSH=background``), and
the inline one on a connection of its own (``HeldPush``).

A submit is accepted at its PostgreSQL commit; the push that tells the drainers is
only a hint the sweeper's reconciliation repeats for any QUEUED task left out of
Redis.  So a long-running process (the local API server, a script) need not wait
for it: the submitting thread hands the tasks to one pusher thread and returns.
The pusher sends whatever has piled up as one ``Queue.push`` (one round trip), so
concurrent requests share their pushes; a lone task (most pushes: 70 % of them with 8
HTTP clients, all of them with one), or a few of one tenant, is one script call on a
Redis connection the thread holds (``client.HeldScript``) instead of a pipeline through
the client's pool.

A thread that submits alone (nothing else submitting in the last second) writes a
lone task's push itself, without waiting for its reply (``unawaited.UnawaitedPush``):
for it the hand-off to this thread cost more than the push.  What that path does not
take, or cannot confirm, comes here.

Not for Lambda: a frozen execution environment would hold the pushes until its
next invocation (``config.default_submit_push`` keeps Lambda inline).  Pushes still
pending when the process dies are lost like a failed push: the sweeper pushes
those tasks within a sweep interval or two.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Sequence
from queue import SimpleQueue

from chalicelib.adapters.redis.client import HeldScript
from chalicelib.adapters.redis.queue import Queue
from chalicelib.adapters.redis.scripts import PUSH_READY
from chalicelib.core.errors import QueueError
from chalicelib.core.forks import relock_after_fork
from chalicelib.core.model import QueueEntry, Task
from chalicelib.observability.log import logger

OnError = Callable[[int, QueueError], None]


class HeldPush:
    """The inline push (``submit_push=inline``: Lambda) on a Redis connection held for
    it (``client.HeldScript``), not through the client's pool: a lone task's, or a few
    of one tenant's (``PUSH_READY``; what that script does not take is a pipeline on the
    pool as ever, ``Queue.push``).

    The pool's check-out and return were about 60 % of a single push's client CPU
    (round 8); on the push from a submit's commit to the drainer's wake-up this saved
    20-60 µs a push (round 10).  One thread uses the connection at a time: a push that
    finds it in use takes the pool, so a threaded process gets one connection more, not
    one a thread."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._lock = threading.Lock()
        relock_after_fork(self, "_lock")
        self._held: HeldScript | None = None
        self._pid = -1

    def push(self, entries: list[QueueEntry]) -> None:
        """``Queue.push(entries)``; its errors are the caller's (``QueueError``)."""
        if not self._lock.acquire(blocking=False):
            self._queue.push(entries)
            return
        try:
            if self._pid != os.getpid():
                # First use, or a forked child: the parent's socket is not this process's.
                self._pid = os.getpid()
                self._held = HeldScript.of(self._queue.client, PUSH_READY)
            self._queue.push(entries, held=self._held)
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._held is not None and self._pid == os.getpid():
                self._held.close()
            self._held, self._pid = None, -1


class BackgroundPusher:
    """One daemon thread that pushes handed-in tasks in arrival order, coalesced.

    The hand-off is a ``queue.SimpleQueue`` (C): ``put`` appends and wakes the thread's
    blocked ``get`` without Python code, so the submitting thread pays ~1 µs and no
    lock of its own, and the thread takes the GIL once a wake-up rather than for a
    ``Condition``'s waiter bookkeeping on both sides (issue 14 round 10).  ``flush``
    hands in a marker (an ``Event``) that the thread sets once everything before it
    is pushed: the queue is FIFO, so that is everything handed in before the call."""

    def __init__(self, queue: Queue, on_error: OnError) -> None:
        self._queue = queue
        self._on_error = on_error
        self._pid = -1
        self._inbox: SimpleQueue[Sequence[Task] | threading.Event | None] = SimpleQueue()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        relock_after_fork(self, "_start_lock")
        atexit.register(self.flush, 2.0)

    def push(self, tasks: Sequence[Task]) -> None:
        """Hand over the queued and pending ones of ``tasks``; returns at once.  The
        thread makes their entries (``QueueEntry.of_submitted``), so a bulk submit's ~1 µs
        a task of it is done while the submitting thread waits for PostgreSQL, not before
        it returns."""
        if self._pid != os.getpid():
            with self._start_lock:
                if self._pid != os.getpid():
                    self._start()  # first use, or a forked child: the parent's thread is not here
        self._inbox.put(tasks)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything handed in so far is pushed (or reported failed);
        False when ``timeout`` ran out first."""
        if self._pid != os.getpid():
            return True  # nothing handed in by this process (a forked child's parent's)
        if self._closed:
            return self._inbox.empty()  # no thread left to push what came after close
        done = threading.Event()
        self._inbox.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush, then stop the thread."""
        self.flush(timeout)
        if self._closed or self._pid != os.getpid():
            return
        self._closed = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _start(self) -> None:
        self._inbox, self._closed = SimpleQueue(), False
        self._thread = threading.Thread(target=self._run, name="tasklane-pusher", daemon=True)
        self._thread.start()
        # Last: a thread that sees this pid skips the start and puts on the inbox, which
        # must be the new one, read by the new thread (else its tasks sat on the old one).
        self._pid = os.getpid()

    def _run(self) -> None:
        # A lone task's push (most of them: one per single submit), or a few of one
        # tenant's, is PUSH_READY, the script ``Queue.push`` runs for them; this thread
        # runs it on a connection of its own instead of through the client's pool
        # (``client.HeldScript``).
        held = HeldScript.of(self._queue.client, PUSH_READY)
        try:
            self._loop(held)
        finally:
            if held is not None:
                held.close()

    def _loop(self, held: HeldScript | None) -> None:
        inbox = self._inbox
        while True:
            item = inbox.get()
            # Whatever piled up meanwhile goes in the same push (one round trip).
            tasks: list[Task] = []
            done: list[threading.Event] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    done.append(item)
                else:
                    tasks.extend(item)
                if inbox.empty():
                    break
                item = inbox.get()
            if tasks:
                self._push(tasks, held)
            for event in done:
                event.set()
            if stop:
                return

    def _push(self, tasks: list[Task], held: HeldScript | None) -> None:
        entries: list[QueueEntry] = []
        try:
            entries = QueueEntry.of_submitted(tasks)
            if entries:
                self._queue.push(entries, held=held)
        except QueueError as exc:
            self._on_error(len(entries), exc)
        except Exception:  # noqa: BLE001 - the thread must outlive any one push; the sweeper covers it
            logger.exception("background push failed; the sweeper will enqueue the tasks")
