"""``TASKLANE_SUBMIT_PUSH=background``: a submit returns at its commit and the push
follows on the pusher thread, or, for a thread submitting alone, is written on a
connection of its own without waiting for the reply (``unawaited.UnawaitedPush``);
concurrent submits share the pusher thread's pushes; a push that fails leaves the tasks
to the sweeper and the pusher keeps going; a forked child gets a pusher thread and a
connection of its own.  Lone tasks' pushes, inline or not, skip the client's pool."""

from __future__ import annotations

import os
import select
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest
import redis

import chalicelib.container as container_module
from chalicelib.adapters.redis.client import HeldConnection, ScriptLike
from chalicelib.config import Settings, default_submit_push
from chalicelib.container import Container
from chalicelib.core.errors import QueueError
from chalicelib.core.model import QueueEntry, Status
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
    assert rt._pusher is not None  # several threads at once: the pusher thread coalesces


def test_a_thread_submitting_alone_writes_its_pushes_and_reads_the_replies_later(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_rt(submit_push="background")
    written: list[int] = []
    real = rt.queue.push_script_only

    def counted(entries: list[QueueEntry], held: ScriptLike) -> bool:
        written.append(len(entries))
        return real(entries, held)

    monkeypatch.setattr(rt.queue, "push_script_only", counted)
    tasks = [submit(rt, TENANT, request()).task for _ in range(5)]
    assert written == [1] * 5
    assert rt._pusher is None  # never needed: no thread started
    unawaited = rt.unawaited_push(lambda count, exc: None)
    assert rt.flush_pushes(5.0) and not unawaited._owed
    assert {t.id for t in tasks} <= _ready_ids(rt)


def test_a_submit_leaves_its_reply_for_the_next_push_to_read(make_rt: Callable[..., Container]) -> None:
    """Not read after the commit (a poll and a read on the submit's path): the next push
    reads it first, so the replies owed never pile up."""
    rt = make_rt(submit_push="background")
    unawaited = rt.unawaited_push(lambda count, exc: None)
    tasks = [submit(rt, TENANT, request()).task]
    for _ in range(3):
        assert len(unawaited._owed) == 1  # this submit's own reply
        assert unawaited._held is not None and unawaited._held.readable(5.0)  # it is in
        tasks.append(submit(rt, TENANT, request()).task)
    assert len(unawaited._owed) == 1 and rt._pusher is None
    assert rt.flush_pushes(5.0) and not unawaited._owed
    assert {t.id for t in tasks} <= _ready_ids(rt)


def test_an_error_reply_to_an_unawaited_push_leaves_the_task_to_the_sweeper(
    make_rt: Callable[..., Container], caplog: pytest.LogCaptureFixture
) -> None:
    """The reply is read before the next push or by a flush; an error in it (here
    WRONGTYPE: the tenant's ready key holds a string) is logged and the next push goes
    on as usual."""
    rt = make_rt(submit_push="background")
    first = submit(rt, TENANT, request()).task
    assert rt.flush_pushes(5.0) and first.id in _ready_ids(rt)
    rt.queue.client.set(rt.queue.keys.tenant_ready("broken-tenant"), "not a sorted set")
    with caplog.at_level("WARNING"):
        lost = submit(rt, "broken-tenant", request()).task
        assert rt.flush_pushes(5.0)
    assert any("not pushed to Redis" in r.getMessage() for r in caplog.records)
    assert rt.store.get_task("broken-tenant", lost.id).status is Status.QUEUED  # type: ignore[union-attr]
    after = submit(rt, TENANT, request()).task
    assert rt.flush_pushes(5.0) and after.id in _ready_ids(rt)
    assert rt._pusher is None  # the error reply was this push's alone: nothing handed over


def test_an_unawaited_push_reconnects_when_the_server_closed_its_connection(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt(submit_push="background")
    first = submit(rt, TENANT, request()).task
    assert rt.flush_pushes(5.0) and first.id in _ready_ids(rt)
    conn = rt.unawaited_push(lambda count, exc: None)._held
    assert conn is not None
    host, port = conn._conn._sock.getsockname()[:2]
    assert rt.queue.client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}") == 1  # this connection only
    # Nothing was owed on it: the next push finds it closed before writing, and goes on a
    # fresh connection at once, not at a later push or flush (no reply is read after a
    # submit), nor through the pusher thread.
    wait_for(lambda: _closed_by_server(conn), timeout=5.0)
    second = submit(rt, TENANT, request()).task
    fresh = rt.unawaited_push(lambda count, exc: None)._held
    assert fresh is not None and fresh is not conn
    wait_for(lambda: second.id in _ready_ids(rt), timeout=5.0)
    assert rt._pusher is None
    third = submit(rt, TENANT, request()).task  # the fresh connection, no cool-off
    assert rt.unawaited_push(lambda count, exc: None)._held is fresh
    assert rt.flush_pushes(5.0) and third.id in _ready_ids(rt)


def test_an_unawaited_push_reconnects_when_the_server_closed_its_connection_after_a_reply(
    make_rt: Callable[..., Container],
) -> None:
    """The reply of the last push is in, unread, when the server closes the connection
    (an idle timeout): the next push reads the reply, then finds the connection closed
    before writing into it."""
    rt = make_rt(submit_push="background")
    first = submit(rt, TENANT, request()).task
    unawaited = rt.unawaited_push(lambda count, exc: None)
    conn = unawaited._held
    assert conn is not None and unawaited._owed and conn.readable(5.0)  # its reply is in, unread
    host, port = conn._conn._sock.getsockname()[:2]
    assert rt.queue.client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}") == 1
    wait_for(lambda: _closed_by_server(conn), timeout=5.0)
    second = submit(rt, TENANT, request()).task
    assert unawaited._held is not None and unawaited._held is not conn
    wait_for(lambda: {first.id, second.id} <= _ready_ids(rt), timeout=5.0)
    assert rt._pusher is None


def _closed_by_server(conn: HeldConnection) -> bool:
    """Whether the server's close of ``conn`` has reached its socket, replies not read yet
    or not (POLLRDHUP: the peer shut down its side)."""
    poller = select.poll()
    poller.register(conn._conn._sock, select.POLLRDHUP)
    return bool(poller.poll(0))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_pushes_on_a_connection_of_its_own(
    make_rt: Callable[..., Container], redis_url: str
) -> None:
    rt = make_rt(submit_push="background")
    submit(rt, TENANT, request())  # the parent's connection is open
    assert rt.flush_pushes(5.0)
    parent_conn = rt.unawaited_push(lambda count, exc: None)._held

    def child_submits() -> str:
        child = Container.build(rt.settings)  # its own PostgreSQL pool
        child._unawaited = rt._unawaited  # what a process forked after its first submit holds
        task = submit(child, TENANT, request()).task
        fresh = child.unawaited_push(lambda count, exc: None)._held is not parent_conn
        return task.id if fresh and child.flush_pushes(5.0) else ""

    child_id = in_forked_child(child_submits)
    ready = redis.Redis.from_url(redis_url).zrange(rt.queue.keys.tenant_ready(TENANT), 0, -1)
    assert child_id and f"2:{child_id}".encode() in ready
    after = submit(rt, TENANT, request()).task  # the parent's connection was left alone
    assert rt.flush_pushes(5.0) and after.id in _ready_ids(rt)
    assert rt.unawaited_push(lambda count, exc: None)._held is parent_conn


def test_a_failed_background_push_is_left_to_the_sweeper(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_rt(submit_push="background")
    real_push, real_script_push = rt.queue.push, rt.queue.push_script_only
    failures: list[int] = []

    def failing(entries: object, *args: object, **kw: object) -> None:
        failures.append(1)
        raise QueueError("Redis is unreachable or failed: injected")

    # The unawaited push's write fails (it hands the task to the pusher thread), then the
    # thread's push does.
    monkeypatch.setattr(rt.queue, "push", failing)
    monkeypatch.setattr(rt.queue, "push_script_only", failing)
    lost = submit(rt, TENANT, request()).task
    assert rt.flush_pushes(5.0) and failures == [1, 1]
    assert lost.id not in _ready_ids(rt)
    monkeypatch.setattr(rt.queue, "push", real_push)
    monkeypatch.setattr(rt.queue, "push_script_only", real_script_push)
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_the_push_locks_are_held_submits_flushes_and_closes(
    make_rt: Callable[..., Container], redis_url: str
) -> None:
    """A fork copies only the forking thread: a lock another thread held then (a flush
    waiting on a slow Redis, a connect) stayed held in the child, whose flush and close
    then waited for good (core/forks.py)."""
    rt = make_rt(submit_push="background")
    submit(rt, TENANT, request())
    assert rt.flush_pushes(5.0)
    unawaited, pusher = rt._unawaited, rt.pusher(lambda count, exc: None)
    held_push = rt.held_push()
    locks = [unawaited._lock, pusher._start_lock, held_push._lock, container_module._lock]
    for lock in locks:  # held as another thread of the parent may hold them at the fork
        assert lock.acquire(timeout=5)

    def child_submits() -> str:
        child = Container.build(rt.settings)
        child._unawaited, child._pusher = unawaited, pusher
        answer: list[str] = []

        def go() -> None:
            task = submit(child, TENANT, request()).task
            child.held_push()  # built under the module's lock
            child._held_push = held_push
            answer.append(task.id if child.flush_pushes(5.0) else "not flushed")
            child.close()
            answer.append("closed")

        worker = threading.Thread(target=go, daemon=True)
        worker.start()
        worker.join(15)
        return ",".join(answer) if not worker.is_alive() else f"hung after {answer}"

    try:
        answer = in_forked_child(child_submits)
    finally:
        for lock in locks:
            lock.release()
    child_id, _, closed = answer.partition(",")
    assert closed == "closed", answer
    ready = redis.Redis.from_url(redis_url).zrange(rt.queue.keys.tenant_ready(TENANT), 0, -1)
    assert f"2:{child_id}".encode() in ready
