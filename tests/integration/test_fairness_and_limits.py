"""Per-task-type concurrency and rate limits, and priority aging, against real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from chalicelib.config import TypeLimit
from chalicelib.container import Container
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit, submit_many
from tests.helpers import query, request, status_counts, wait_for

TENANT = "fair"


def _drainers(rt: Container, n: int, seconds: float) -> list[threading.Thread]:
    def run() -> None:
        d = Drainer(rt)
        deadline = time.monotonic() + seconds
        try:
            d.run(lambda: deadline - time.monotonic(), idle_exit_seconds=1.0)
        finally:
            d.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_limited_type_never_exceeds_its_concurrency_and_others_keep_flowing(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt(task_limits={"sleep": TypeLimit(concurrency=2)}, executor_concurrency=8)
    db = rt.settings.database_url
    slow = submit_many(rt, TENANT, [request("sleep", {"seconds": 0.4}) for _ in range(8)])
    fast = submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(300)])
    assert len(slow) == 8 and len(fast) == 300
    threads = _drainers(rt, 3, 15)
    peak = 0
    first_fast_done_at = None
    started = time.monotonic()
    while any(t.is_alive() for t in threads):
        (running,) = query(db, "SELECT count(*) FROM tasks WHERE name = 'sleep' AND status = 'PROCESSING'")[0]
        peak = max(peak, running)
        if first_fast_done_at is None and status_counts(db).get("COMPLETED", 0) >= 300:
            first_fast_done_at = time.monotonic() - started
        if status_counts(db) == {"COMPLETED": 308}:
            break
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert status_counts(db) == {"COMPLETED": 308}
    assert peak <= 2, f"{peak} sleep tasks ran at once; the limit is 2"
    assert peak == 2  # and the limit was actually reached
    # The 300 fast ones did not queue behind the throttled type (8 x 0.4 s / 2 = 1.6 s).
    assert first_fast_done_at is not None and first_fast_done_at < 1.5


def test_rate_limited_type_is_spread_over_time(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(task_limits={"noop": TypeLimit(rate_per_second=20, burst=5)})
    submit_many(rt, TENANT, [request("noop") for _ in range(25)])
    threads = _drainers(rt, 2, 10)
    wait_for(lambda: status_counts(rt.settings.database_url) == {"COMPLETED": 25}, timeout=10)
    for t in threads:
        t.join()
    (first, last) = query(rt.settings.database_url, "SELECT min(started_at), max(started_at) FROM tasks")[0]
    # 5 at once (the burst), then 20 at 20/s: about one second in all, certainly not less than 0.9 s.
    assert (last - first).total_seconds() >= 0.9


def test_low_priority_task_waiting_past_the_aging_bound_beats_new_normal_work(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt(priority_aging_seconds=1, drain_batch_size=1)
    low = submit(rt, TENANT, request("noop", priority="low")).task
    time.sleep(2.2)  # the low task ages past two levels' head start (the clock, not work, is awaited)
    flood = submit_many(rt, TENANT, [request("noop", priority="normal") for _ in range(20)])
    assert len(flood) == 20
    d = Drainer(rt)
    try:
        deadline = time.monotonic() + 10
        d.run(lambda: deadline - time.monotonic(), idle_exit_seconds=0.2)
    finally:
        d.close()
    order = [r[0] for r in query(rt.settings.database_url, "SELECT id::text FROM tasks ORDER BY started_at")]
    assert order[0] == low.id


def test_flood_of_high_priority_cannot_starve_low_beyond_the_bound(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(priority_aging_seconds=1, drain_batch_size=5)
    low = submit(rt, TENANT, request("noop", priority="low")).task
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            submit_many(rt, TENANT, [request("noop", priority="high") for _ in range(20)])
            time.sleep(0.02)

    producer = threading.Thread(target=flood)
    producer.start()
    threads = _drainers(rt, 1, 8)
    try:
        got = wait_for(lambda: (t := rt.store.get_task(TENANT, low.id)) and t.started_at and t, timeout=8)
    finally:
        stop.set()
        producer.join()
        for t in threads:
            t.join()
    waited = (got.started_at - got.created_at).total_seconds()
    # Two levels below high: overtakes new high work after 2 x 1 s of waiting.
    assert waited < 2 + 1.5, f"low task waited {waited:.2f}s under a flood of high"
