"""A lone submit's push, written to Redis and not waited for (``UnawaitedPush``).

In a long-running process (``TASKLANE_SUBMIT_PUSH=background``) a submit hands its push
to the pusher thread (``pusher.BackgroundPusher``), so that a hung Redis never holds a
request.  For a thread that submits alone (a script, a producer loop, one keep-alive
client of the local API) that hand-off cost more than the push itself: waking the
thread and passing the GIL back and forth cost a sequential submit 14-58 µs more CPU
than this path in five runs, and in some blocks of them a fifth more time (issue 14,
round 18; bench/RESULTS.md).

Here the submitting thread writes the push itself (``PUSH_READY`` by EVALSHA, the script
a lone push runs anyway), while the submit's commit is on its way, on a Redis connection
of this object's, and does not wait for the reply.  Replies are read before the next
push, while that submit's commit is on its way, and by ``settle`` (a flush, a close).
Reading them after each commit instead put a poll and a read on every submit's path
after its answer: without them, 7 % more sequential submits a second (6 alternating
pairs, 1.00-1.24; issue 14, round 21).  So a reply to a process's last push before it
goes quiet is read at its next push or its close, and what it says is reported then.
What a reply says is handled as the pusher thread would: NOSCRIPT (a script cache
flushed under a live connection) hands those tasks to the pusher thread, whose script
reloads itself; another error reply is logged and left to the sweeper's reconciliation,
as for any failed push.  (Waiting for the reply, as the inline push does, was faster for
a submit alone on the machine, and slower over HTTP with the drainers running: the reply
then competes with the drainer it wakes.)

``try_push`` answers False, and the caller hands the push to the pusher thread, when:

- several threads submit at once (a threaded server under load): the pusher thread
  coalesces their pushes into fewer round trips and drainer wake-ups; a push per
  request cost the 8-client HTTP load 11 % more CPU a request;
- the connection is in use by another thread, or the push is not one script call
  (several partitions, a type with limits: ``Queue.push_script_only``);
- Redis does not answer (a reply owed longer than ``OWED_SECONDS``, or ``MOST_OWED``
  of them) or a connect failed: the pusher thread takes every push for
  ``COOL_OFF_SECONDS``.

When the connection breaks, or Redis does not answer, the tasks whose replies were
owed go to the pusher thread: whether their push happened is unknown, and one more is
harmless (the same members, scores and wake tokens).  A connection the server closed
while nothing was owed (a restart, an idle timeout) is found before the next write, by
one poll, and that push goes on a fresh connection.  A submitting thread waits on
Redis only to connect, at its first push and after a lost connection: at most
``CONNECT_SECONDS`` for the connect and as much for the script load, then a cool-off.
Not for Lambda, whose frozen execution environment would leave the replies unread
until its next invocation: there the push is inline (``pusher.HeldPush``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from redis.exceptions import NoScriptError, RedisError, ResponseError

from chalicelib.adapters.redis.client import HeldConnection, HeldScript
from chalicelib.adapters.redis.pusher import OnError
from chalicelib.adapters.redis.queue import Queue
from chalicelib.adapters.redis.scripts import PUSH_READY
from chalicelib.core.errors import QueueError
from chalicelib.core.forks import relock_after_fork
from chalicelib.core.model import QueueEntry, Task
from chalicelib.observability.log import logger

# The connect and the script load on the submitting thread, each at most this long.
CONNECT_SECONDS = 0.25
# Replies owed longer than this, or this many, mean a Redis that does not answer.
OWED_SECONDS = 1.0
MOST_OWED = 64
# After a failed connect, or a Redis that does not answer, the pusher thread takes every
# push for this long.
COOL_OFF_SECONDS = 30.0
# A push from another thread within this long of the last one: the process submits
# from several threads at once, and the pusher thread coalesces their pushes.
SHARED_SECONDS = 1.0

Handoff = Callable[[Sequence[Task]], None]


class UnawaitedPush:
    """Lone pushes written on a connection of this object's, their replies read later.

    ``try_push`` takes a lone task's push or answers False; the caller then hands it to
    the pusher thread, as ``handoff`` does with the tasks whose push this object could
    not confirm.  A push Redis refused (an error reply) is reported to ``on_error``, as
    the pusher thread reports its failures, and left to the sweeper.  Thread-safe: one
    thread uses the connection at a time; another that finds it in use gets False."""

    def __init__(self, queue: Queue, handoff: Handoff, on_error: OnError) -> None:
        self._queue = queue
        self._handoff = handoff
        self._on_error = on_error
        self._lock = threading.Lock()
        relock_after_fork(self, "_lock")
        self._held: HeldConnection | None = None  # once connected, with its script:
        self._script: HeldScript | None = None
        self._pid = -1
        # What each reply on the wire answers, in order: the tasks of a push, or None
        # for a SCRIPT LOAD; with the monotonic time it was written.
        self._owed: deque[tuple[Sequence[Task] | None, float]] = deque()
        self._cool_until = 0.0
        self._shared_until = 0.0
        self._last_thread = 0
        self._last_at = 0.0
        # Several partitions take a pipeline: the pusher thread for those (and for a
        # client that has no connection to hold: _connect).
        self._usable = len(queue.parts) == 1

    def try_push(self, tasks: Sequence[Task]) -> bool:
        """Write the push of ``tasks`` (one task, or a few of one tenant); False when it
        is not this object's to take (see the module's docstring)."""
        if not self._usable or not self._lock.acquire(blocking=False):
            return False
        try:
            now = time.monotonic()
            me = threading.get_ident()
            if me != self._last_thread:
                if now - self._last_at < SHARED_SECONDS:
                    self._shared_until = now + SHARED_SECONDS
                self._last_thread = me
            self._last_at = now
            if now < self._shared_until or now < self._cool_until:
                return False
            if self._pid != os.getpid():
                # First use, or a forked child: the parent's socket is not the child's to
                # use or to shut down; it is dropped, not closed.
                self._held, self._script, self._owed, self._pid = None, None, deque(), os.getpid()
            if self._owed:
                self._read_replies(now)
            if not self._owed and self._held is not None:
                self._check_idle()
            script = self._script or self._connect(now)
            if script is None:
                return False
            entries = QueueEntry.of_submitted(tasks)
            if not entries:
                return True
            try:
                taken = self._queue.push_script_only(entries, script.write)
            except QueueError as exc:  # the write failed, and redis-py dropped the socket
                self._lost(f"write: {exc}")
                return False
            if taken:
                self._owed.append((tasks, now))
            return taken
        finally:
            self._lock.release()

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` for the owed replies; False when some are still owed
        (their tasks then go to the pusher thread, as for a Redis that does not answer).
        A broken connection hands its owed tasks to the pusher thread too, and counts as
        settled: the pusher's flush (``Container.flush_pushes``) says whether they went."""
        with self._lock:
            if self._pid != os.getpid() or self._held is None:
                return True
            deadline = time.monotonic() + timeout
            try:
                while self._owed and self._held.readable(max(0.0, deadline - time.monotonic())):
                    self._read_one()
            except RedisError as exc:
                self._lost(f"read: {exc}")
                return True
            if self._owed:
                self._unanswered(f"{len(self._owed)} replies owed after {timeout:.1f} s")
                return False
            return True

    def close(self, timeout: float = 2.0) -> None:
        """``settle``, then drop the connection."""
        self.settle(timeout)
        with self._lock:
            if self._pid == os.getpid():
                self._drop()

    # --- with the lock held --------------------------------------------------------

    def _connect(self, now: float) -> HeldScript | None:
        """A fresh connection with the script loaded; None while cooling off or when it
        cannot be had."""
        if now < self._cool_until:
            return None
        held = HeldConnection.of(self._queue.client, timeout=CONNECT_SECONDS)
        if held is None:  # a cluster client or a fake: no connection of this kind to hold
            self._usable = False
            return None
        try:
            held.command("SCRIPT", "LOAD", PUSH_READY)  # connects
        except RedisError as exc:
            held.close()
            self._cool_off(f"connect: {exc}", [])
            return None
        self._held, self._script = held, held.script(PUSH_READY)
        return self._script

    def _read_replies(self, now: float) -> None:
        """Read the owed replies that are in; one owed too long, or too many owed: Redis
        does not answer.  (A socket the server closed while nothing was owed is found
        by ``_check_idle`` before the next write.)"""
        held = self._held
        try:
            while self._owed and held is not None and held.readable(0):
                self._read_one()
        except RedisError as exc:
            self._lost(f"read: {exc}")
            return
        if self._owed and (len(self._owed) >= MOST_OWED or now - self._owed[0][1] > OWED_SECONDS):
            self._unanswered(f"{len(self._owed)} replies owed, the oldest for {now - self._owed[0][1]:.1f} s")

    def _check_idle(self) -> None:
        """With nothing owed, the socket has nothing to say: something to read means the
        server closed it (a restart, an idle timeout) or broke the protocol.  Found here,
        before the write: no reply is read after a submit any more, so a push written
        into a dead socket would wait for the next push, or for the sweeper, to be
        noticed.  One poll, while the submit's commit is on its way."""
        assert self._held is not None
        try:
            broken = self._held.readable(0)
        except RedisError as exc:
            self._lost(f"closed while idle: {exc}")
            return
        if broken:
            self._lost("unexpected data while no reply was owed")

    def _read_one(self) -> None:
        held, script = self._held, self._script
        assert held is not None and script is not None  # replies are owed on a connection
        tasks, _ = self._owed.popleft()
        try:
            held.read()
        except NoScriptError:
            # The script cache was flushed under this connection: the pusher thread's
            # script reloads itself; this connection loads it again for the next push.
            if tasks is not None:
                self._handoff(tasks)
                script.write_load()
                self._owed.append((None, time.monotonic()))
        except ResponseError as exc:  # an error reply: this push did not happen
            if tasks is not None:
                self._on_error(len(tasks), QueueError(f"Redis refused a push: {exc}"))
        except RedisError:
            self._owed.appendleft((tasks, 0.0))  # not read: still owed, for _lost to hand over
            raise

    def _lost(self, why: str) -> None:
        """The connection broke: drop it and hand the tasks of the owed replies to the
        pusher thread (whether those pushes happened is unknown; one more is harmless).
        The next push connects afresh (a restarted server); a connect that fails then
        cools off."""
        owed = self._owed_tasks()
        self._drop()
        logger.info("unawaited Redis push connection lost", extra={"reason": why, "handed_over": len(owed)})
        if owed:
            self._handoff(owed)

    def _unanswered(self, why: str) -> None:
        """Redis does not answer: as ``_lost``, and the pusher thread takes every push
        for ``COOL_OFF_SECONDS``."""
        owed = self._owed_tasks()
        self._drop()
        self._cool_off(why, owed)

    def _cool_off(self, why: str, owed: list[Task]) -> None:
        self._cool_until = time.monotonic() + COOL_OFF_SECONDS
        logger.warning(
            "unawaited Redis pushes paused; the pusher thread takes them",
            extra={"reason": why, "handed_over": len(owed), "seconds": COOL_OFF_SECONDS},
        )
        if owed:
            self._handoff(owed)

    def _owed_tasks(self) -> list[Task]:
        return [t for tasks, _ in self._owed if tasks is not None for t in tasks]

    def _drop(self) -> None:
        if self._held is not None:
            self._held.close()
        self._held, self._script, self._owed = None, None, deque()
