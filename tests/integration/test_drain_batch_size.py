"""A drainer claims a backlog in growing batches and a trickle in small ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from chalicelib.container import Container
from chalicelib.core.model import Status
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit, submit_many
from tests.helpers import drain_once, request, status_counts, wait_for

TENANT = "sizes"


def _claims(rt: Container, drainer: Drainer) -> list[tuple[int, int]]:
    """Records (asked, got) of every claim the drainer makes."""
    seen: list[tuple[int, int]] = []
    real = rt.queue.claim

    def claim(count: int, lease_seconds: float, **kw: Any) -> dict[str, str]:
        got = real(count, lease_seconds, **kw)
        seen.append((count, len(got)))
        return got

    rt.queue.claim = claim  # type: ignore[method-assign]
    return seen


def _drain_and_close(rt: Container, drainer: Drainer) -> dict[str, Any]:
    try:
        return drain_once(rt, drainer=drainer)
    finally:
        drainer.close()


def test_a_backlog_is_claimed_in_growing_batches_up_to_the_largest(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(drain_batch_size=100, drain_batch_min=10)
    submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(300)])
    drainer = Drainer(rt, name="sizes")
    seen = _claims(rt, drainer)
    stats = _drain_and_close(rt, drainer)
    assert stats["completed"] == 300
    full = [asked for asked, got in seen if got == asked]
    # Each full batch at least doubles the next (up to 8x when it ran in a small part
    # of the 1 s target), up to the largest; then the rest of the backlog.
    assert full[0] == 10 and 100 in full, seen
    growth = full[: full.index(100) + 1]
    assert all(2 * a <= b or b == 100 for a, b in pairwise(growth)), seen
    assert stats["batches"] <= 6  # at most 10 + 20 + 40 + 80 + 100 + the last 50
    # The queue ran dry: the next claim asks for the smallest batch again.
    assert seen[-1] == (10, 0)
    assert status_counts(rt.settings.database_url) == {"COMPLETED": 300}


def test_an_idle_drainer_claims_once_per_wake_and_starts_each_task_at_once(
    make_rt: Callable[..., Container],
) -> None:
    # An idle wait far longer than the test: only the wake tokens can start the tasks.
    rt = make_rt(drain_idle_wait_seconds=30.0)
    drainer = Drainer(rt, name="idle")
    seen = _claims(rt, drainer)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: drainer.run(lambda: 0.0 if stop.is_set() else 60.0))
    thread.start()
    try:
        for i in range(10):
            task = submit(rt, TENANT, request("noop", {"i": i})).task
            wait_for(lambda t=task: _status(rt, t.id) is Status.COMPLETED, timeout=5)
    finally:
        stop.set()
        rt.queue.wake()  # ends the drainer's wait
        thread.join(timeout=10)
        drainer.close()
    assert not thread.is_alive()
    # One claim per woken task (plus the first, the last and a stray token at most):
    # a drainer that found the queue dry waits for a token instead of claiming again.
    assert sum(got for _, got in seen) == 10
    assert len(seen) <= 13, seen


def _status(rt: Container, task_id: str) -> Status | None:
    task = rt.store.get_task(TENANT, task_id)
    return task.status if task else None


def test_a_slow_claim_statement_does_not_slow_the_ramp(make_rt: Callable[..., Container]) -> None:
    # A first claim on a fresh connection (connect, the function's first plan) took
    # 50-120 ms on a busy machine: the sizer must not read that as slow tasks.
    rt = make_rt(drain_batch_size=100, drain_batch_min=10)
    submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(300)])
    drainer = Drainer(rt, name="slow-claims")
    seen = _claims(rt, drainer)
    real = rt.store.claim

    def slow_claim(*args: Any, **kw: Any) -> Any:
        time.sleep(0.15)  # a batch's claim over a 1/8 of the target would cap growth at 2x
        return real(*args, **kw)

    rt.store.claim = slow_claim  # type: ignore[method-assign]
    stats = _drain_and_close(rt, drainer)
    assert stats["completed"] == 300
    full = [asked for asked, got in seen if got == asked]
    assert full[:3] == [10, 80, 100], seen
