"""Per-task-type concurrency and rate limits, and priority aging, against real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import redis

from chalicelib.config import TypeLimit
from chalicelib.container import Container
from chalicelib.core.model import QueueEntry
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit, submit_many
from tests.helpers import peak_running, query, request, start_drainers, status_counts, wait_for

TENANT = "fair"


def test_limited_type_never_exceeds_its_concurrency_and_others_keep_flowing(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt(task_limits={"sleep": TypeLimit(concurrency=2)}, executor_concurrency=8)
    db = rt.settings.database_url
    slow = submit_many(rt, TENANT, [request("sleep", {"seconds": 0.4}) for _ in range(8)])
    fast = submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(300)])
    assert len(slow) == 8 and len(fast) == 300
    threads = start_drainers(rt, 3, seconds=30, idle_exit_seconds=1.0)
    wait_for(lambda: status_counts(db) == {"COMPLETED": 308}, timeout=30, message="every task to complete")
    for t in threads:
        t.join()
    peak = peak_running(db, "name = %s", "sleep")
    assert peak <= 2, f"{peak} sleep tasks ran at once; the limit is 2"
    assert peak == 2  # and the limit was actually reached
    # The fast ones did not queue behind the throttled type: the last two sleeps could
    # start only after three rounds of two had finished (>= 1.2 s), and fast tasks ran
    # before that.  Ordering, not a stopwatch: on a loaded machine both sides slow down.
    [(fast_before_last_slow,)] = query(
        db,
        "SELECT count(*) FROM tasks WHERE name = 'noop'"
        " AND finished_at < (SELECT max(started_at) FROM tasks WHERE name = 'sleep')",
    )
    assert fast_before_last_slow > 0, "the fast tasks waited for the throttled type"


def test_rate_limited_type_is_spread_over_time(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(task_limits={"noop": TypeLimit(rate_per_second=20, burst=5)})
    submit_many(rt, TENANT, [request("noop") for _ in range(25)])
    threads = start_drainers(rt, 2, seconds=10, idle_exit_seconds=1.0)
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
    # The low task's score is its run_at (PostgreSQL's clock), a new normal one's is its
    # own less one level's head start (1 s): once the database's clock is past that, every
    # task of the flood below scores after it.
    wait_for(
        lambda: query(
            rt.settings.database_url,
            "SELECT clock_timestamp() - run_at > interval '1.1 seconds' FROM tasks WHERE id = %s",
            low.id,
        )[0][0],
        timeout=10,
        message="the low task to age past normal's head start",
    )
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
    threads = start_drainers(rt, 1, seconds=60, idle_exit_seconds=1.0)
    try:
        wait_for(lambda: (t := rt.store.get_task(TENANT, low.id)) and t.started_at, timeout=30)
    finally:
        stop.set()
        producer.join()
        for t in threads:
            t.join()
    # Two levels below high: it overtakes high work submitted more than 2 x 1 s after it.
    # So whatever started before it was submitted within that bound.  Checked on the
    # rows, not as a wait on a stopwatch: how long the backlog ahead of it takes to drain
    # depends on the machine's load, the order does not.
    overtook = query(
        rt.settings.database_url,
        "SELECT count(*) FROM tasks t, tasks low WHERE low.id = %s"
        " AND t.started_at < low.started_at AND t.run_at >= low.run_at + interval '2 seconds'",
        low.id,
    )
    assert overtook == [(0,)], "high work submitted past the aging bound started before the low task"


def test_a_duplicate_push_of_a_running_task_cannot_free_its_concurrency_slot(
    make_rt: Callable[..., Container],
) -> None:
    """The sweeper's reconcile reads QUEUED rows, then ZADD NX's them to Redis; a claim
    between the two takes one into its lease, and the push put it back.  The drainer
    that popped that duplicate found nothing to claim in PostgreSQL and acked it as
    stale, which removed the running task's slot: a third task of a type limited to 2
    ran.  Now a claim drops a ready id whose lease is live."""
    rt = make_rt(task_limits={"noop": TypeLimit(concurrency=2)})
    tasks = [submit(rt, TENANT, request("noop", {"i": i})).task for i in range(3)]
    entries = [QueueEntry.of(t) for t in tasks]
    assert rt.flush_pushes(5.0)
    first = rt.queue.claim(1, 30.0)
    assert list(first) == [tasks[0].id]
    assert [c.id for c in rt.store.claim(list(first), uuid.uuid4().hex, 30.0, actor="drainer-1")] == [tasks[0].id]
    rt.queue.push(entries[:1], only_new=True)  # the reconcile's push, a moment late
    second = rt.queue.claim(1, 30.0)
    assert tasks[0].id not in second  # the duplicate is dropped, not handed out
    claimed = rt.store.claim(list(second), uuid.uuid4().hex, 30.0, actor="drainer-2")
    rt.queue.ack([i for i in second if i not in {c.id for c in claimed}], names=dict(second))
    rt.queue.claim(2, 30.0)  # at most one more: two slots, one of them the first task's
    [(running,)] = query(rt.settings.database_url, "SELECT count(*) FROM tasks WHERE status = 'PROCESSING'")
    assert running <= 2
    inflight = redis.Redis.from_url(rt.settings.redis_url).zrange(rt.queue.keys.inflight("noop"), 0, -1)
    assert tasks[0].id.encode() in inflight and len(inflight) == 2
