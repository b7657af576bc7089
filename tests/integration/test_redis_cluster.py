"""Tasklane on a real 3-master Redis Cluster (``TASKLANE_REDIS_CLUSTER=true``): submit,
drain, retries, priorities, per-type limits, the API rate limiter, and a master
losing its data (the queue's own, or another one); with queue partitions
(``TASKLANE_QUEUE_PARTITIONS=4``) too: they spread over the 3 masters, and a master
losing some of them gets those rebuilt."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from redis.crc import key_slot

from chalicelib.adapters.redis.client import ClusterClient
from chalicelib.adapters.redis.keys import partition_of
from chalicelib.adapters.redis.queue import Queue
from chalicelib.adapters.redis.ratelimit import RateLimiter
from chalicelib.config import TypeLimit
from chalicelib.container import Container
from chalicelib.core.errors import QueueError
from chalicelib.services.drain import task_ports
from chalicelib.services.submit import submit_many
from chalicelib.services.sweep import sweep
from chalicelib.tasktypes import TaskContext
from chalicelib.tasktypes.aws import once_per_task
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
from tools.devstack.services.redis_cluster import RedisClusterHandle

TENANT = "cluster"


@pytest.mark.parametrize("partitions", [1, 4])
def test_cluster_runs_submit_drain_retries_and_priorities(
    make_cluster_rt: Callable[..., Container], partitions: int
) -> None:
    rt = make_cluster_rt(drain_batch_size=1, executor_concurrency=1, queue_partitions=partitions)
    assert isinstance(rt.queue.client, ClusterClient)
    db = rt.settings.database_url
    order = ["low", "normal", "high", "critical"]
    by_priority = {p: submit_many(rt, TENANT, [request("noop", {"p": p}, priority=p)])[0].task.id for p in order}
    flaky = submit_many(rt, TENANT, [request("fail", {"times": 2})])[0].task.id
    later = submit_many(rt, TENANT, [request("noop", delay_seconds=0.3)])[0].task.id

    drain_and_sweep_until(rt, lambda: status_counts(db) == {"COMPLETED": 6}, timeout=20)

    sql = "SELECT id::text FROM tasks WHERE id = ANY(%s::uuid[]) ORDER BY started_at"
    started = [r[0] for r in query(db, sql, list(by_priority.values()))]
    assert started[:4] == [by_priority[p] for p in reversed(order)]
    stories = task_stories(db)
    assert stories[flaky]["attempts"] == 3 and stories[later]["status"] == "COMPLETED"
    assert story_problems(stories) == []
    assert not any(rt.queue.depths().values())


@pytest.mark.parametrize("partitions", [1, 4])
def test_cluster_holds_a_type_concurrency_limit_across_drainers(
    make_cluster_rt: Callable[..., Container], partitions: int
) -> None:
    rt = make_cluster_rt(
        task_limits={"sleep": TypeLimit(concurrency=2)}, executor_concurrency=4, queue_partitions=partitions
    )
    db = rt.settings.database_url
    submit_many(rt, TENANT, [request("sleep", {"seconds": 0.15}) for _ in range(6)])
    submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(20)])

    drain_in_threads(rt, 2, seconds=10)
    assert status_counts(db) == {"COMPLETED": 26}
    peak = peak_running(db, "name = %s", "sleep")
    assert peak == 2, f"{peak} sleep tasks ran at once; the limit is 2"


def test_cluster_rate_limiter_counts_per_key(make_cluster_rt: Callable[..., Container]) -> None:
    rt = make_cluster_rt()
    limiter = RateLimiter(rt.queue.client, keys=rt.queue.keys)
    decisions = [limiter.check("k1", limit=3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert limiter.check("k2", limit=3).allowed


def test_losing_another_master_is_harmless_and_losing_the_queues_is_rebuilt(
    make_cluster_rt: Callable[..., Container], redis_cluster: RedisClusterHandle
) -> None:
    rt = make_cluster_rt()
    db = rt.settings.database_url
    sweep(rt)  # the sentinel
    ids = [r.task.id for r in submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(50)])]
    submit_many(rt, TENANT, [request("noop", delay_seconds=0.2)])
    home = redis_cluster.node_for(rt.queue.keys.tenant_ready(TENANT))
    # Every key carries the {prefix} hash tag: the sentinel lives with what it vouches for.
    assert redis_cluster.node_for(rt.queue.keys.epoch) is home
    before = rt.queue.depths()

    for other in (n for n in redis_cluster.nodes if n is not home):
        redis_cluster.flush(other)
    assert not rt.queue.needs_rebuild() and rt.queue.depths() == before

    redis_cluster.flush(home)
    assert rt.queue.needs_rebuild() and not any(rt.queue.depths().values())
    assert sweep(rt).rebuilt
    # The delayed task may have come due meanwhile (0.2 s on a slow machine): the
    # rebuild then puts it in ready, so compare what is queued, not where.
    after = rt.queue.depths()
    assert after["ready"] + after["delayed"] == before["ready"] + before["delayed"]
    assert after["leased"] == before["leased"]
    drain_and_sweep_until(rt, lambda: status_counts(db) == {"COMPLETED": 51}, timeout=20)
    assert story_problems(task_stories(db, ids)) == []


def test_queue_partitions_spread_over_the_masters(
    make_cluster_rt: Callable[..., Container], redis_cluster: RedisClusterHandle
) -> None:
    rt = make_cluster_rt(queue_partitions=4)
    db = rt.settings.database_url
    ids = [r.task.id for r in submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(200)])]
    owners = []
    for part in rt.queue.parts:
        key = part.tenant_ready(TENANT)
        node = redis_cluster.node_for(key)
        direct = redis.Redis.from_url(node.url)
        try:
            # The server's own slot for every key of the partition, and its data on that master.
            slots = {direct.cluster("KEYSLOT", k) for k in (key, part.leases, part.delayed, part.epoch)}
            assert slots == {key_slot(key.encode())}
            assert direct.zcard(key) == sum(1 for i in ids if partition_of(i, 4) == part.partition) > 0
        finally:
            direct.close()
        owners.append(node.port)
    assert len(set(owners)) == 3, f"the 4 partitions sit on {len(set(owners))} of the 3 masters"
    drain_and_sweep_until(rt, lambda: status_counts(db) == {"COMPLETED": 200}, timeout=30)
    assert story_problems(task_stories(db, ids)) == [] and not any(rt.queue.depths().values())


def test_a_master_losing_some_partitions_gets_those_rebuilt_only(
    make_cluster_rt: Callable[..., Container], redis_cluster: RedisClusterHandle
) -> None:
    rt = make_cluster_rt(queue_partitions=4)
    db = rt.settings.database_url
    sweep(rt)  # the sentinels
    ids = [r.task.id for r in submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(120)])]
    submit_many(rt, TENANT, [request("noop", delay_seconds=60)])
    before = rt.queue.depths()
    zero = redis_cluster.node_for(rt.queue.keys.epoch)
    victim = next(n for n in redis_cluster.nodes if n is not zero)  # partition 0 and the wake list survive
    lost = [p.partition for p in rt.queue.parts if redis_cluster.node_for(p.epoch) is victim]
    assert lost and 0 not in lost

    redis_cluster.flush(victim)
    assert rt.queue.lost_partitions() == lost
    assert rt.queue.depths()["ready"] < before["ready"]
    report = sweep(rt)
    assert report.rebuilt_partitions == lost and rt.queue.depths() == before
    drain_and_sweep_until(rt, lambda: status_counts(db).get("COMPLETED") == 120, timeout=30)
    assert story_problems(task_stories(db, ids)) == []


def test_unreachable_cluster_is_a_queue_error_not_a_failed_start() -> None:
    # RedisCluster contacts the cluster in its constructor; ours waits for the first call,
    # so a process starts (and submit persists to PostgreSQL) while the cluster is away.
    queue = Queue.from_url("redis://127.0.0.1:1/0", cluster=True)  # nothing listens on port 1
    with pytest.raises(QueueError):
        queue.needs_rebuild()
    with pytest.raises(ValueError, match="transaction"):
        queue.client.pipeline(transaction=True)


def test_once_per_task_records_live_in_tasklanes_slot_on_the_cluster(
    make_cluster_rt: Callable[..., Container], redis_cluster: RedisClusterHandle
) -> None:
    rt = make_cluster_rt()
    calls: list[int] = []

    def work() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    def attempt(n: int) -> TaskContext:
        ctx = TaskContext(task_id=TASK, name="x", tenant=TENANT, attempt=n, max_retries=3, timeout_seconds=5)
        ctx.started_monotonic = time.monotonic()
        ctx.ports = task_ports(rt)
        return ctx

    assert once_per_task("demo", attempt(1), {}, work) == {"n": 1}
    # The outcome of attempt 1 was lost: attempt 2 gets the stored result, no second call.
    assert once_per_task("demo", attempt(2), {}, work) == {"n": 1} and calls == [1]
    home = redis.Redis.from_url(redis_cluster.node_for(rt.queue.keys.leases).url)
    assert home.keys("*idempotency*"), "Powertools' record carries the {prefix} tag"


TASK = "7f0c6a86-1b1c-4c8e-9d43-0c7e6c1d3c11"
