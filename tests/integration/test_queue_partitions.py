"""Queue partitions (``TASKLANE_QUEUE_PARTITIONS=4``) on the suite's private Redis: ids
spread over the partitions, claims take the best head across them, limits and quotas
hold globally from partition 0, and the sweeper rebuilds a lost partition alone.
(The same on a 3-master Redis Cluster: ``test_redis_cluster.py``.)"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

import redis

from chalicelib.adapters.redis.keys import partition_of
from chalicelib.adapters.redis.queue import Queue
from chalicelib.config import TypeLimit
from chalicelib.container import Container
from chalicelib.core.model import Priority, QueueEntry
from chalicelib.services.submit import submit_many
from chalicelib.services.sweep import sweep
from tests.helpers import (
    drain_and_sweep_until,
    drain_in_threads,
    peak_running,
    query,
    request,
    status_counts,
    story_problems,
    task_stories,
)

PARTS = 4


def _entries(
    tenant: str, n: int, *, priority: Priority = Priority.NORMAL, at_ms: float, name: str = "noop"
) -> list[QueueEntry]:
    return [QueueEntry.ready(str(uuid.uuid4()), tenant, priority, at_ms + i, name) for i in range(n)]


def test_ids_live_in_their_hash_partition_and_partition_zero_keeps_todays_keys(client: redis.Redis) -> None:
    q = Queue(client, partitions=PARTS)
    entries = _entries("a", 200, at_ms=time.time() * 1000)
    q.push(entries)
    sizes = [client.zcard(part.tenant_ready("a")) for part in q.parts]
    expected = Counter(partition_of(e.id, PARTS) for e in entries)
    assert sizes == [expected[p] for p in range(PARTS)] and all(sizes)
    assert q.parts[0].tenant_ready("a") == "{tasklane}:queue:a"
    assert q.tenant_depths() == {"a": (200, 0)} and q.queued_count("a") == 200
    # Cancel finds an id without a lookup.
    q.remove(entries[:50])
    assert q.depths()["ready"] == 150
    # One partition: no other tag appears at all.
    client.flushdb()
    Queue(client).push(entries)
    assert {k.decode().split("}")[0] + "}" for k in client.keys("*")} == {"{tasklane}"}


def test_each_batch_is_the_best_ids_of_all_partitions(client: redis.Redis) -> None:
    q = Queue(client, partitions=PARTS, aging_seconds=10)
    now = time.time() * 1000
    flood = _entries("a", 200, at_ms=now - 5_000)
    q.push(flood)
    assert {partition_of(e.id, PARTS) for e in flood} == set(range(PARTS))
    rank = {e.id: i for i, e in enumerate(flood)}
    # Batches of 10 come in global order, whichever partitions hold the ids: each is
    # exactly the next ten (within a batch the drainer starts them side by side).
    for k in range(20):
        assert sorted(rank[i] for i in q.claim(10, 30)) == list(range(10 * k, 10 * k + 10))
    assert not q.claim(10, 30) and q.depths() == {"ready": 0, "delayed": 0, "leased": 200}


def test_higher_priorities_in_every_partition_go_first(client: redis.Redis) -> None:
    q = Queue(client, partitions=PARTS, aging_seconds=60)
    now = time.time() * 1000
    normal = _entries("a", 100, at_ms=now - 5_000)
    critical = _entries("b", 12, priority=Priority.CRITICAL, at_ms=now)
    high = _entries("a", 12, priority=Priority.HIGH, at_ms=now)
    q.push(normal + high + critical)
    assert len({partition_of(e.id, PARTS) for e in critical}) > 1
    assert set(q.claim(12, 30)) == {e.id for e in critical}
    assert set(q.claim(12, 30)) == {e.id for e in high}
    # A due retry is scored like a ready id: a critical one goes first too.
    retry = QueueEntry.due_at(str(uuid.uuid4()), "c", Priority.CRITICAL, now - 1, None)
    q.push([retry])
    assert next(iter(q.claim(5, 30))) == retry.id
    # A limited type at its limit gives its share back to the other partitions.
    limited = Queue(client, partitions=PARTS, aging_seconds=60, limits={"typed": TypeLimit(concurrency=1)})
    typed = _entries("a", 5, priority=Priority.CRITICAL, at_ms=now, name="typed")
    limited.push(typed)
    got = list(limited.claim(10, 30))
    assert len(got) == 10 and [i for i in got if i in {e.id for e in typed}] == [typed[0].id]


def test_due_retries_in_every_partition_are_found(client: redis.Redis) -> None:
    q = Queue(client, partitions=PARTS)
    now = time.time() * 1000
    due = [QueueEntry.due_at(str(uuid.uuid4()), "t", Priority.NORMAL, now - 1_000 + i, None) for i in range(40)]
    q.push(due)
    assert {partition_of(e.id, PARTS) for e in due} == set(range(PARTS))
    got: list[str] = []
    for _ in range(10):
        got += q.claim(10, 30)
    assert sorted(got) == sorted(e.id for e in due)


def test_limited_types_and_capped_tenants_live_in_partition_zero(client: redis.Redis) -> None:
    q = Queue(client, partitions=PARTS, limits={"typed": TypeLimit(concurrency=3)})
    q.set_tenant_limits({"heavy": 2.0}, {"capped": 2})
    now = time.time() * 1000
    typed = _entries("a", 20, at_ms=now, name="typed")
    capped = _entries("capped", 20, at_ms=now)
    q.push(typed + capped)
    zero = q.parts[0]
    assert client.zcard(zero.typed_ready("typed")) == 20 and client.zcard(zero.tenant_ready("capped")) == 20
    assert not any(client.exists(part.tenant_ready("capped")) for part in q.parts[1:])
    # Weights go to every partition (fair share holds per partition), quotas to 0 only.
    assert all(client.hget(part.tenant_weight, "heavy") == b"2.0" for part in q.parts)
    assert all(not client.exists(part.tenant_max_running) for part in q.parts[1:])
    typed_ids, capped_ids = {e.id for e in typed}, {e.id for e in capped}
    got = q.claim(50, 30)
    assert Counter("typed" if i in typed_ids else "capped" for i in got) == {"typed": 3, "capped": 2}
    assert not q.claim(50, 30)  # both at their limit, whichever partition is asked
    done = next(i for i in got if i in capped_ids)
    q.ack([done], tenants={done: "capped"})
    assert [i in capped_ids for i in q.claim(50, 30)] == [True]  # the tenant's slot came back
    done = next(i for i in got if i in typed_ids)
    q.ack([done], names={done: "typed"})
    assert [i in typed_ids for i in q.claim(50, 30)] == [True]  # then the type's


def test_a_tenant_given_a_running_quota_moves_into_partition_zero(client: redis.Redis) -> None:
    q = Queue(client, partitions=PARTS)
    queued = _entries("x", 60, at_ms=time.time() * 1000)
    q.push(queued)  # no quota yet: spread over the partitions
    assert client.zcard(q.parts[0].tenant_ready("x")) < 60
    q.set_tenant_limits({}, {"x": 2})  # what the sweeper does when the quota appears
    assert client.zcard(q.parts[0].tenant_ready("x")) == 60
    assert not any(client.exists(part.tenant_ready("x")) for part in q.parts[1:])
    assert len(q.claim(50, 30)) == 2 and not q.claim(50, 30)  # the quota holds for all of them
    assert q.tenant_depths(["x"]) == {"x": (58, 2)}


def test_black_box_submit_drain_retries_priorities_with_partitions(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(queue_partitions=PARTS, drain_batch_size=1, executor_concurrency=1)
    assert rt.queue.partitions == PARTS
    db = rt.settings.database_url
    order = ["low", "normal", "high", "critical"]
    by_priority = {
        p: [r.task.id for r in submit_many(rt, "t", [request("noop", {"p": p, "i": i}, priority=p) for i in range(3)])]
        for p in order
    }
    flaky = submit_many(rt, "t", [request("fail", {"times": 2})])[0].task.id
    later = submit_many(rt, "t", [request("noop", delay_seconds=0.3)])[0].task.id
    assert len({partition_of(i, PARTS) for ids in by_priority.values() for i in ids}) > 1

    drain_and_sweep_until(rt, lambda: status_counts(db) == {"COMPLETED": 14}, timeout=30)

    sql = "SELECT id::text FROM tasks WHERE id = ANY(%s::uuid[]) ORDER BY started_at"
    started = [r[0] for r in query(db, sql, [i for ids in by_priority.values() for i in ids])]
    assert [next(p for p, ids in by_priority.items() if i in ids) for i in started] == [
        p for p in reversed(order) for _ in range(3)
    ]
    stories = task_stories(db)
    assert stories[flaky]["attempts"] == 3 and stories[later]["status"] == "COMPLETED"
    assert story_problems(stories) == []
    assert not any(rt.queue.depths().values())


def test_a_type_limit_holds_globally_across_partitions_and_drainers(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(queue_partitions=PARTS, task_limits={"sleep": TypeLimit(concurrency=2)}, executor_concurrency=4)
    db = rt.settings.database_url
    submit_many(rt, "t", [request("sleep", {"seconds": 0.15}) for _ in range(6)])
    submit_many(rt, "t", [request("noop", {"i": i}) for i in range(20)])

    drain_in_threads(rt, 2)
    assert status_counts(db) == {"COMPLETED": 26}
    peak = peak_running(db, "name = %s", "sleep")
    assert peak == 2, f"{peak} sleep tasks ran at once; the limit is 2"


def test_losing_one_partition_rebuilds_that_partition_only(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(queue_partitions=PARTS)
    db = rt.settings.database_url
    assert sweep(rt).rebuilt_partitions == list(range(PARTS))  # an empty Redis: every sentinel
    ids = [r.task.id for r in submit_many(rt, "t", [request("noop", {"i": i}) for i in range(80)])]
    submit_many(rt, "t", [request("noop", delay_seconds=60)])
    before = rt.queue.depths()
    client = redis.Redis.from_url(rt.settings.redis_url)
    lost = rt.queue.parts[2]
    in_lost = client.zcard(lost.tenant_ready("t"))
    assert in_lost == sum(1 for i in ids if partition_of(i, PARTS) == 2) > 0
    # What a cluster master losing this partition's slot does: its keys, sentinel included.
    client.delete(*client.keys(lost.tag.replace("{", "\\{").replace("}", "\\}") + "*"))
    assert rt.queue.lost_partitions() == [2]
    assert rt.queue.depths()["ready"] == before["ready"] - in_lost
    report = sweep(rt)
    assert report.rebuilt and report.rebuilt_partitions == [2]
    assert rt.queue.depths() == before and client.zcard(lost.tenant_ready("t")) == in_lost
    assert rt.queue.lost_partitions() == []

    client.flushdb()  # the whole Redis: every partition
    assert sweep(rt).rebuilt_partitions == list(range(PARTS)) and rt.queue.depths() == before
    drain_and_sweep_until(rt, lambda: status_counts(db).get("COMPLETED") == 80, timeout=30)
    assert story_problems(task_stories(db, ids)) == []
