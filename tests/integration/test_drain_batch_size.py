"""A drainer claims a backlog in growing batches and a trickle in small ones."""

from __future__ import annotations

from collections.abc import Callable

from chalicelib.container import Container
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit_many
from tests.helpers import drain_once, request, status_counts

TENANT = "sizes"


def _claims(rt: Container, drainer: Drainer) -> list[tuple[int, int]]:
    """Records (asked, got) of every claim the drainer makes."""
    seen: list[tuple[int, int]] = []
    real = rt.queue.claim

    def claim(count: int, lease_seconds: float) -> dict[str, str]:
        got = real(count, lease_seconds)
        seen.append((count, len(got)))
        return got

    rt.queue.claim = claim  # type: ignore[method-assign]
    return seen


def test_a_backlog_is_claimed_in_doubling_batches_up_to_the_largest(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(drain_batch_size=100, drain_batch_min=10)
    submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(300)])
    drainer = Drainer(rt, name="sizes")
    seen = _claims(rt, drainer)
    try:
        stats = drain_once(rt, drainer=drainer)
    finally:
        drainer.close()
    assert stats["completed"] == 300
    full = [asked for asked, got in seen if got == asked]
    assert full[:5] == [10, 20, 40, 80, 100]
    assert stats["batches"] == 6  # 10 + 20 + 40 + 80 + 100 + the last 50
    # The queue ran dry: the next claim asks for the smallest batch again.
    assert seen[-1] == (10, 0)
    assert status_counts(rt.settings.database_url) == {"COMPLETED": 300}
