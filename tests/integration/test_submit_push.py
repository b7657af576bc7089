"""``TASKLANE_SUBMIT_PUSH=background``: a submit returns at its commit and the push
follows on the pusher thread; concurrent submits share pushes; a push that fails
leaves the tasks to the sweeper and the pusher keeps going; a forked child gets a
pusher thread of its own.  Lone tasks' pushes, inline or not, skip the client's pool."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest
import redis

from chalicelib.config import Settings, default_submit_push
from chalicelib.container import Container
from chalicelib.core.errors import QueueError
from chalicelib.core.model import Status
from chalicelib.services.submit import submit, submit_many
from chalicelib.services.sweep import sweep
from tests.helpers import drain_once, in_forked_child, request, wait_for

TENANT = "push-tenant"


def _ready_ids(rt: Container) -> set[str]:
    raw = rt.queue.client.zrange(rt.queue.keys.tenant_ready(TENANT), 0, -1)
    return {r.decode().split(":", 1)[1] for r in raw}  # members are "<rank>:<id>"


def test_default_is_background_outside_lambda_and_inline_in_it() -> None:
    assert default_submit_push({}) == "background"
    assert default_submit_push({"AWS_LAMBDA_FUNCTION_NAME": "tasklane-dev"}) == "inline"
    assert Settings.from_env({}).submit_push == "background"
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "f"}).submit_push == "inline"
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "f", "TASKLANE_SUBMIT_PUSH": "background"}).submit_push == (
        "background"
    )
    assert Settings().submit_push == "inline"


def test_background_submits_reach_redis_and_run(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(submit_push="background")
    tasks = [submit(rt, TENANT, request(payload={"i": i})).task for i in range(20)]
    tasks += [s.task for s in submit_many(rt, TENANT, [request(payload={"j": j}) for j in range(30)])]  # type: ignore[union-attr]
    assert rt.flush_pushes(5.0)
    assert {t.id for t in tasks} <= _ready_ids(rt)
    drain_once(rt)
    for t in tasks:
        assert rt.store.get_task(TENANT, t.id).status is Status.COMPLETED  # type: ignore[union-attr]


def test_concurrent_submitters_share_the_pusher(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(submit_push="background")
    ids: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(25):
            task = submit(rt, TENANT, request()).task
            with lock:
                ids.append(task.id)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert rt.flush_pushes(5.0)
    assert len(ids) == 100 and set(ids) <= _ready_ids(rt)


def test_a_failed_background_push_is_left_to_the_sweeper(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_rt(submit_push="background")
    real_push = rt.queue.push
    failures: list[int] = []

    def failing(entries: object, **kw: object) -> None:
        failures.append(1)
        raise QueueError("Redis is unreachable or failed: injected")

    monkeypatch.setattr(rt.queue, "push", failing)
    lost = submit(rt, TENANT, request()).task
    assert rt.flush_pushes(5.0) and failures
    assert lost.id not in _ready_ids(rt)
    monkeypatch.setattr(rt.queue, "push", real_push)
    kept = submit(rt, TENANT, request()).task  # the pusher thread survived the failure
    assert rt.flush_pushes(5.0) and kept.id in _ready_ids(rt)
    # The reconciliation pushes a QUEUED task missing from Redis once it is older than
    # its grace (the sweep interval, at least 2 s).
    wait_for(lambda: sweep(rt) and lost.id in _ready_ids(rt), timeout=10, interval=0.2, message="reconciled")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_pushes_on_a_thread_of_its_own(make_rt: Callable[..., Container], redis_url: str) -> None:
    rt = make_rt(submit_push="background")
    submit(rt, TENANT, request())  # the parent's pusher thread is running
    assert rt.flush_pushes(5.0)

    def child_submits() -> str:  # submit, flush, report the id
        child = Container.build(rt.settings)  # its own PostgreSQL pool; the parent's stays untouched
        child._pusher = rt._pusher  # what a process forked after its first submit holds
        task = submit(child, TENANT, request()).task
        return task.id if child.flush_pushes(5.0) else ""

    child_id = in_forked_child(child_submits)
    ready = redis.Redis.from_url(redis_url).zrange(rt.queue.keys.tenant_ready(TENANT), 0, -1)
    assert child_id and f"2:{child_id}".encode() in ready  # a normal-priority member


def test_tasks_handed_to_the_pusher_get_their_entries_there(make_rt: Callable[..., Container]) -> None:
    """``push``: the thread makes the entries of the queued and pending tasks only,
    and a flush counts the others settled (nothing to push for a cancelled task)."""
    rt = make_rt(submit_push="inline")
    queued = submit(rt, TENANT, request()).task
    delayed = submit(rt, TENANT, request(delay_seconds=3600)).task
    rt.queue.client.flushdb()
    cancelled = replace(queued, id=str(uuid.uuid4()), status=Status.CANCELLED)
    pusher = rt.pusher(lambda count, exc: None)
    pusher.push([queued, cancelled, delayed])
    assert rt.flush_pushes(5.0)
    assert _ready_ids(rt) == {queued.id}
    assert rt.queue.client.zcard(rt.queue.keys.delayed) == 1


@pytest.mark.parametrize("mode", ["background", "inline"])
def test_a_lone_task_is_pushed_on_a_connection_of_its_own(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Issue 14: a single push skips the client's pool (a held connection,
    ``client.HeldScript``): the pusher thread's since round 8, the inline one's since
    round 10."""
    rt = make_rt(submit_push=mode)

    def pool_path(**kw: object) -> None:
        raise AssertionError("a lone push went through the client's pool")

    monkeypatch.setattr(rt.queue, "_push_ready", pool_path)
    tasks = [submit(rt, TENANT, request()).task for _ in range(3)]
    assert rt.flush_pushes(5.0) and {t.id for t in tasks} <= _ready_ids(rt)


def test_an_inline_push_takes_the_pool_while_another_thread_holds_the_connection(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held connection serves one thread at a time; a concurrent inline push goes
    through the client's pool instead of waiting for it (or sharing its socket)."""
    rt = make_rt(submit_push="inline")
    pooled: list[int] = []
    real = rt.queue._push_ready

    def pool_path(**kw: object) -> object:
        pooled.append(1)
        return real(**kw)

    monkeypatch.setattr(rt.queue, "_push_ready", pool_path)
    first = submit(rt, TENANT, request()).task  # the held connection, made on first use
    assert not pooled
    with rt.held_push()._lock:  # another thread's push in progress
        second = submit(rt, TENANT, request()).task
    assert pooled == [1] and {first.id, second.id} <= _ready_ids(rt)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_pushes_inline_on_a_connection_of_its_own(
    make_rt: Callable[..., Container], redis_url: str
) -> None:
    rt = make_rt(submit_push="inline")
    submit(rt, TENANT, request())  # the parent's held connection is open
    parent_conn = rt.held_push()._held

    def child_submits() -> str:  # submit, report the id
        child = Container.build(rt.settings)  # its own PostgreSQL pool
        child._held_push = rt._held_push  # what a process forked after its first submit holds
        task = submit(child, TENANT, request()).task
        return task.id if child.held_push()._held is not parent_conn else ""

    child_id = in_forked_child(child_submits)
    ready = redis.Redis.from_url(redis_url).zrange(rt.queue.keys.tenant_ready(TENANT), 0, -1)
    assert child_id and f"2:{child_id}".encode() in ready
    after = submit(rt, TENANT, request()).task  # the parent's connection still answers its own
    assert rt.held_push()._held is parent_conn and after.id in _ready_ids(rt)
