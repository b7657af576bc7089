"""Locks a forked child gets back unheld (core/forks.py), and the background pusher's
first start, which a second thread's push must not slip past."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from chalicelib.adapters.redis.pusher import BackgroundPusher
from chalicelib.core.forks import relock_after_fork
from tests.helpers import in_forked_child


class _Owner:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.other = threading.Lock()
        relock_after_fork(self, "lock")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_the_registered_locks_back_unheld() -> None:
    owner = _Owner()
    owner.lock.acquire()
    owner.other.acquire()
    try:
        answer = in_forked_child(lambda: f"{owner.lock.acquire(timeout=2)} {owner.other.acquire(timeout=0.1)}")
    finally:
        owner.lock.release()
        owner.other.release()
    assert answer == "True False"  # the lock not registered stays as the fork copied it


class _Recording(BackgroundPusher):
    """The real hand-off, start and loop; the push itself only noted (no Redis)."""

    def __init__(self) -> None:
        super().__init__(queue=type("NoRedis", (), {"client": object()})(), on_error=lambda n, e: None)  # type: ignore[arg-type]
        self.pushed: list[Any] = []

    def _push(self, tasks: list[Any], held: Any) -> None:
        self.pushed.extend(tasks)


@pytest.fixture
def switching_often() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave inside _start, where the race was
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("switching_often")
def test_pushes_handed_in_while_the_pusher_first_starts_are_all_pushed() -> None:
    """``_start`` used to publish its pid before its new inbox: a second thread's push
    went to the old inbox, read by no thread, and ``flush`` still said True (about 2 %
    of such starts lost a hand-off)."""
    lost: list[Sequence[str]] = []
    for _ in range(400):
        pusher = _Recording()
        barrier = threading.Barrier(4)

        def push(i: int, pusher: _Recording = pusher, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            pusher.push([f"task-{i}"])  # type: ignore[list-item]

        threads = [threading.Thread(target=push, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pusher.flush(5.0)
        if len(pusher.pushed) != 4:
            lost.append(sorted(pusher.pushed))
        pusher.close(1.0)
    assert lost == []
