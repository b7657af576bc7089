"""``python -m bench.stampdrain``: the real drain worker (``tools.devstack drain``)
with one extra executor, ``bench_stamp``, that records when it started running
(wall clock, the same clock as PostgreSQL's ``now()`` on this host).  Used only
for the end-to-end latency workload; throughput runs use ``tools.devstack drain``
itself with the built-in ``noop``.

For the latency split it also wraps three calls of the drain loop (at class level,
in this process only) and stamps each claimed id with when the drainer woke (its
BLPOP on the wake list returned; the claim's start when it did not block), when the
Redis claim script answered and when the claim statement committed.  A wait armed
ahead of the claim (one partition, the loop's held connection) answers together with
the claim script: the wake is stamped when both replies are in, so the wake-up step
holds the claim script and the claim script step is 0.  A claim the loop writes and a
lane reads (``adapters/postgres/sent_claim.py``) is stamped when the lane has its rows.
The executor returns those stamps in its result, so the bench reads them from
PostgreSQL."""

from __future__ import annotations

import sys
import time
from typing import Any

from chalicelib.adapters.postgres.sent_claim import SentClaim
from chalicelib.adapters.postgres.store import Store
from chalicelib.adapters.redis.queue import Queue
from chalicelib.core.model import Claimed
from chalicelib.tasktypes import TaskContext, registry

# task id -> {"wake": ..., "script": ..., "commit": ...} (epoch seconds)
_STAMPS: dict[str, dict[str, float]] = {}
_last_wake = [0.0]
ARMED = -1.0


def _stamp_commit(ids: Any) -> None:
    """When the claim of ``ids`` came back (its rows read), for the ids the Redis claim stamped."""
    end = time.time()
    for i in ids:
        if i in _STAMPS:
            _STAMPS[i]["commit"] = end


def _instrument() -> None:
    wait_for_work, redis_claim, store_claim = Queue.wait_for_work, Queue.claim, Store.claim
    sent_batch = SentClaim.batch

    def timed_wait(self: Queue, timeout: float, **kw: Any) -> bool | None:
        woke = wait_for_work(self, timeout, **kw)
        # None: the wait is armed ahead of the claim (HeldConnection.arm) and ends in it.
        _last_wake[0] = time.time() if woke is not None else ARMED
        return woke

    def timed_redis_claim(self: Queue, count: int, lease_seconds: float, **kw: Any) -> dict[str, str]:
        start = time.time()
        ids = redis_claim(self, count, lease_seconds, **kw)
        end = time.time()
        # The wake that led to this claim, if the loop blocked since its last claim; an
        # armed wait's reply comes with the claim's, so the drainer sees both at its end.
        armed = _last_wake[0] == ARMED
        wake = end if armed else _last_wake[0] if _last_wake[0] > 0 else start
        _last_wake[0] = 0.0
        for i in ids:
            _STAMPS[i] = {"wake": wake, "script_start": end if armed else start, "script": end}
        return ids

    def timed_store_claim(self: Store, ids: Any, token: str, lease_seconds: float, **kw: Any) -> Any:
        rows = store_claim(self, ids, token, lease_seconds, **kw)
        _stamp_commit(ids)
        return rows

    def timed_sent_claim(self: SentClaim) -> list[Claimed]:
        # A claim the loop wrote and a lane read (after a dry claim): stamped when the
        # lane has its rows, on its way to running the first of them.
        batch = sent_batch(self)
        _stamp_commit([task.id for task in batch])
        return batch

    Queue.wait_for_work = timed_wait  # type: ignore[method-assign]
    Queue.claim = timed_redis_claim  # type: ignore[method-assign]
    Store.claim = timed_store_claim  # type: ignore[method-assign]
    SentClaim.batch = timed_sent_claim  # type: ignore[method-assign]


@registry.task("bench_stamp")
def bench_stamp(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Returns when it started, next to the submitter's t0 and the drainer's stamps."""
    t1 = time.time()
    return {
        "t1": t1,
        "t0": payload.get("t0") if isinstance(payload, dict) else None,
        **_STAMPS.pop(ctx.task_id, {}),
    }


if __name__ == "__main__":
    from tools.devstack import supervisor as local

    _instrument()
    sys.exit(local.main(["drain"]))
