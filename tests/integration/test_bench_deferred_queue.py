"""The bench's pre-submit (``bench.ours.DeferredQueue``): the drain workloads submit their
tasks with the pushes held back, then release every id at one instant.  It stands in for
the runtime's queue through the submit's real inline push (``pusher.HeldPush``), which
round 14's last change made reach for the queue's client: every drain workload of the
bench then failed, while the suite passed."""

from __future__ import annotations

from bench.ours import DeferredQueue, _with_queue, request
from chalicelib.container import Container
from chalicelib.services.submit import submit_many


def test_a_deferred_pre_submit_pushes_nothing_until_it_is_released(rt: Container) -> None:
    assert rt.settings.submit_push == "inline"  # as the bench's drain runtime pushes
    deferred = DeferredQueue(rt.queue)
    held_back = _with_queue(rt, deferred)
    for size in (1, 3, 70):  # a lone task, a few (PUSH_READY), more than the script takes
        submit_many(held_back, "bench-deferred", [request() for _ in range(size)])
    assert len(deferred.ready) == 74
    assert rt.queue.claim(100, 30) == {}

    deferred.release(chunk=50)
    assert set(rt.queue.claim(100, 30)) == {e.id for e in deferred.ready}
