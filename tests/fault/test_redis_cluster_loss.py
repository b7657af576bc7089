"""One master of a 3-master Redis Cluster loses its data (FLUSHALL, or killed and
restarted empty) while real drain and sweep processes work through a load; and the
same over HTTP against a live stack in cluster mode; and both losses again with queue
partitions spread over the masters.

The cluster is this module's own (tests here kill its masters); a restarted master
rejoins owning its old slots, so the cluster is whole again for the next test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from chalicelib.adapters.redis.keys import Keys, partition_of
from chalicelib.core.errors import PartialPushError
from chalicelib.core.model import QueueEntry
from chalicelib.services.submit import submit_many
from chalicelib.services.sweep import sweep
from tests.fault.conftest import TENANT, make_runtime, queue_is_empty
from tests.fault.load import live_stack, wait_health_down, wait_on_stack, wait_recovered
from tests.fault.workers import Workers, worker_env
from tests.helpers import drain_and_sweep_until, query, request, status_counts, story_problems, task_stories
from tools.devstack import services as devservices
from tools.devstack.services.redis_cluster import RedisClusterHandle, start_private_cluster

TOTAL = 400
CLUSTER_ENV = {"TASKLANE_REDIS_CLUSTER": "true"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterHandle]:
    handle = start_private_cluster(tmp_path_factory.mktemp("fault-cluster"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.parametrize("partitions", [1, 4], ids=["one-queue", "4-partitions"])
@pytest.mark.parametrize("loss", ["flush", "kill-and-restart"])
def test_a_master_losing_its_data_under_load_loses_no_task(
    loss: str, partitions: int, cluster: RedisClusterHandle, fault_db: str, prefix: str, tmp_path: Path
) -> None:
    """The master holding the queue (one partition), or partition 1 of 4 spread over
    the 3 masters (and whatever else hashes there), is flushed, or killed and restarted
    empty, mid-run; the sweepers rebuild what it held and every accepted task still
    ends COMPLETED exactly once."""
    cluster.wait_ok()
    rt = make_runtime(fault_db, cluster.url, prefix, redis_cluster=True, queue_partitions=partitions)
    # Small batches: the loss must hit ids still waiting in the ready sets, not only
    # leases, and drainers that claim up to 500 at a time (and a claim across partitions
    # fills a big batch from all of them) would hold all 300 before the loss.
    env = CLUSTER_ENV | {"TASKLANE_QUEUE_PARTITIONS": str(partitions), "TASKLANE_DRAIN_BATCH_SIZE": "20"}
    workers = Workers(worker_env(fault_db, cluster.url, prefix, **env), tmp_path / "workers")
    try:
        workers.sweep()
        workers.drain()
        workers.drain()
        # 50 ms each: the 250 left when 50 are done take the 16 lanes of two drainers about
        # a second, so the loss below finds tasks still queued.  At 10 ms they took ~0.2 s,
        # and a poll or two late on a busy machine the loss found all 300 finished.
        tasks = [request("sleep", {"seconds": 0.05, "i": i}) for i in range(TOTAL)]
        submit_many(rt, TENANT, tasks[:300])
        workers.wait_for(
            lambda: status_counts(fault_db).get("COMPLETED", 0) >= 50, timeout=30, message="50 tasks to complete"
        )
        victim = cluster.node_for(rt.queue.parts[min(1, partitions - 1)].epoch)
        held = [p.partition for p in rt.queue.parts if cluster.node_for(p.epoch) is victim]
        if loss == "flush":
            cluster.flush(victim)
        else:
            victim.kill()
        at_loss = status_counts(fault_db)
        assert at_loss.get("COMPLETED", 0) < 300 and at_loss.get("QUEUED", 0) > 0, at_loss
        # Submits go on: into the emptied partitions, or (while their master is dead)
        # PostgreSQL only.
        submit_many(rt, TENANT, tasks[300:])
        if loss != "flush":
            victim.start()  # empty, same port, same nodes.conf: it owns its slots again
            cluster.wait_ok()

        workers.wait_for(
            lambda: status_counts(fault_db) == {"COMPLETED": TOTAL},
            timeout=60,
            message=f"all {TOTAL} tasks to complete after partitions {held} were lost ({loss})",
        )
        stories = task_stories(fault_db)
        assert len(stories) == TOTAL and story_problems(stories) == []
        workers.wait_for(
            lambda: not rt.queue.lost_partitions() and queue_is_empty(rt),
            timeout=15,
            message="the lost partitions to be rebuilt and drained",
        )
    finally:
        workers.close()
        rt.close()
        # A failure between the kill and the restart must not leave the module's
        # cluster short of a master for the tests after this one.
        if any(not node.is_running() for node in cluster.nodes):
            for node in cluster.nodes:
                if not node.is_running():
                    node.start()
            cluster.wait_ok()


def test_partitions_on_live_masters_keep_draining_while_another_master_is_dead(
    cluster: RedisClusterHandle, fault_db: str, prefix: str
) -> None:
    """4 queue partitions; the master of partition 1 (not partition 0's) dies.  Submits
    go on and the tasks of the partitions on the live masters run at once (one pipeline
    per partition when the whole one fails); partition 1's wait in PostgreSQL, and run
    once their master is back (empty: its partition is rebuilt).  The submit does not
    wait seconds on the dead master (client._cluster_retry)."""
    cluster.wait_ok()

    def master(pre: str, partition: int) -> int:
        return cluster.node_for(Keys(pre, partition).epoch).port or 0

    # A prefix of this test's own whose partition 1 is not on partition 0's master.
    pre = next(f"{prefix}-{i}" for i in range(100) if master(f"{prefix}-{i}", 1) != master(f"{prefix}-{i}", 0))
    rt = make_runtime(fault_db, cluster.url, pre, redis_cluster=True, queue_partitions=4, drain_margin_seconds=0.0)
    victim = cluster.node_for(rt.queue.parts[1].epoch)
    on_victim = {p.partition for p in rt.queue.parts if cluster.node_for(p.epoch) is victim}
    try:
        sweep(rt)
        victim.kill()
        started = time.monotonic()
        tasks = [r.task for r in submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(80)])]
        # A dead master costs a submit a few quick retries, not redis-py's default ten
        # with backoff to 1 s: 4-7 s measured, against 0.05-0.2 s now.
        assert time.monotonic() - started < 2.0
        ids = [t.id for t in tasks]
        stranded = {i for i in ids if partition_of(i, 4) in on_victim}
        assert stranded and len(stranded) < len(ids)
        # The failed push says how many did not go in (what the submit logs), not all 80.
        with pytest.raises(PartialPushError) as failed:
            rt.queue.push(QueueEntry.of_submitted(tasks))  # again: a no-op where it went in
        assert failed.value.unpushed == len(stranded)
        drain_and_sweep_until(
            rt, lambda: status_counts(fault_db).get("COMPLETED", 0) == len(ids) - len(stranded), timeout=30
        )
        sql = "SELECT id::text FROM tasks WHERE status = 'QUEUED'"
        assert {r[0] for r in query(fault_db, sql)} == stranded

        victim.start()  # empty: partition 1's sentinel is gone with the rest
        cluster.wait_ok()
        drain_and_sweep_until(rt, lambda: status_counts(fault_db) == {"COMPLETED": len(ids)}, timeout=30)
        assert story_problems(task_stories(fault_db)) == [] and not rt.queue.lost_partitions()
    finally:
        if not victim.is_running():
            victim.start()
            cluster.wait_ok()
        rt.close()


def test_a_dead_master_without_tasklanes_keys_stops_nothing(
    cluster: RedisClusterHandle, fault_db: str, prefix: str
) -> None:
    """Another master dies while the queue's master has just forgotten its scripts (as
    after a restart): the claim's NOSCRIPT is answered by one EVAL on the queue's own
    master, not by a SCRIPT LOAD on every primary, which the dead one would fail."""
    cluster.wait_ok()
    # Drained in this process: no margin kept for a Lambda's end.
    rt = make_runtime(fault_db, cluster.url, prefix, redis_cluster=True, drain_margin_seconds=0.0)
    home = cluster.node_for(rt.queue.keys.leases)
    other = next(n for n in cluster.nodes if n is not home)
    try:
        submit_many(rt, TENANT, [request("noop", {"i": i}) for i in range(20)])
        other.kill()
        flushed = redis.Redis.from_url(home.url)
        flushed.script_flush()
        flushed.close()
        drain_and_sweep_until(rt, lambda: status_counts(fault_db) == {"COMPLETED": 20}, timeout=20)
    finally:
        other.start()
        cluster.wait_ok()
        rt.close()


@pytest.mark.parametrize("partitions", ["1", "4"])
def test_live_stack_on_a_cluster_survives_its_queue_master_dying(
    partitions: str, cluster: RedisClusterHandle, pg_server: str, tmp_path: Path
) -> None:
    cluster.wait_ok()
    database = devservices.test_database_name("fault")
    env = {**CLUSTER_ENV, "TASKLANE_QUEUE_PARTITIONS": partitions}
    try:
        with live_stack(pg_server, cluster.url, tmp_path / "stack", database=database, env=env) as stack:
            health = requests.get(stack.base_url + "/health", timeout=10)
            assert health.status_code == 200, health.text
            r = stack.post("/api/v1/tasks", {"name": "noop", "payload": {"before": True}, "priority": "high"})
            assert r.status_code == 201 and "RateLimit-Remaining" in r.headers, r.text  # GCRA ran on the cluster
            before = r.json()["id"]
            wait_on_stack(stack, lambda: stack.task(before)["status"] == "COMPLETED", timeout=20, message="a task")

            # The stack's prefix is the default; partition 0 (health's key, the wake list).
            home = cluster.node_for(Keys().leases)
            for other in (n for n in cluster.nodes if n is not home):
                # One partition: they hold none of Tasklane's keys, nothing happens; four:
                # they hold partitions 1 and 2, which the sweeper rebuilds.
                cluster.flush(other)
            home.kill()

            body = wait_health_down(stack)
            assert body["components"]["redis"]["status"] == "DOWN"
            during = stack.submit("noop", {"during": True})  # 201: PostgreSQL took it

            home.start()
            cluster.wait_ok()
            done = wait_recovered(
                stack, during["id"], message="the task accepted while its master was dead to complete"
            )
            assert done["result"] == {"during": True} and done["attempts"] == 1
            assert story_problems(task_stories(stack.database_url)) == []
    finally:
        devservices.drop_database(pg_server, database)
