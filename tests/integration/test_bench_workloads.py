"""The bench's own workloads run, small: ``make bench`` is how speed is judged, so a
change that breaks a workload must fail here, not at the next bench run.

Round 14's last change made the submit's inline push (``pusher.HeldPush``) reach for
the queue's client, which the bench's pre-submit stand-in (``bench.ours.DeferredQueue``)
lacked: every drain workload of the bench failed while the suite passed.

The workloads run on the bench's own servers (``bench.env.bench_env``: a database of
its own on the usual PostgreSQL, a Redis it starts and stops), as ``make bench`` runs
them, with real drainer and sweeper subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import ours
from bench.env import BenchEnv, bench_env
from chalicelib.container import Container
from chalicelib.services.submit import submit_many


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchEnv]:
    with bench_env(logs=Path(tmp_path_factory.mktemp("bench-logs"))) as made:
        yield made


def test_a_deferred_pre_submit_pushes_nothing_until_it_is_released(rt: Container) -> None:
    assert rt.settings.submit_push == "inline"  # as the bench's drain runtime pushes
    deferred = ours.DeferredQueue(rt.queue)
    held_back = ours._with_queue(rt, deferred)
    for size in (1, 3, 70):  # a lone task, a few (PUSH_READY), more than the script takes
        submit_many(held_back, "bench-deferred", [ours.request() for _ in range(size)])
    assert len(deferred.ready) == 74
    assert rt.queue.claim(100, 30) == {}

    deferred.release(chunk=50)
    assert set(rt.queue.claim(100, 30)) == {e.id for e in deferred.ready}


def test_the_drain_workload_drains_every_pre_submitted_task(env: BenchEnv) -> None:
    # It returns only once all 300 rows are COMPLETED (BenchError otherwise).
    got = ours.drain_run(env, drainers=2, n=300, timeout=60)
    assert got["rate"] > 0
    assert got["retried"] == 0
    assert got["drainer_rss_mb"] > 0


def test_the_latency_workload_times_every_task_and_splits_its_steps(env: BenchEnv) -> None:
    got = ours.latency_run(env, per_second=200, count=40)
    assert got["n"] == 40
    assert 0 < got["p50_ms"] <= got["p99_ms"]
    assert got["db_p50_ms"] > 0
