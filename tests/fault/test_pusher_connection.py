"""The pusher thread's own Redis connection (``HeldConnection``, issue 14 round 8): a lone
push that fails while Redis is down leaves the task QUEUED for the sweeper and is
reported; once Redis is back (restarted empty: no connection, no script) the next
push reconnects and reloads the script.  The unawaited push (``unawaited.UnawaitedPush``,
round 18): a hung server (SIGSTOP) never holds a submit, and every task is in Redis once
it answers again; a script cache flushed under the live connection (NOSCRIPT in a reply
read later) hands the task to the pusher thread, and the connection goes on.  The Redis
is this test's own."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from chalicelib.adapters.redis import unawaited
from chalicelib.adapters.redis.client import HeldConnection
from chalicelib.container import Container
from chalicelib.core.errors import QueueError
from chalicelib.core.model import Status
from chalicelib.services.submit import submit
from tests.fault.conftest import TENANT, make_runtime
from tests.helpers import request, wait_for
from tools.devstack import services as devservices


@pytest.fixture
def rt(fault_db: str, private_redis: devservices.RedisHandle, prefix: str) -> Iterator[Container]:
    runtime = make_runtime(fault_db, private_redis.url, prefix, submit_push="background")
    try:
        yield runtime
    finally:
        runtime.close()


def _ready(rt: Container) -> set[str]:
    raw = rt.queue.client.zrange(rt.queue.keys.tenant_ready(TENANT), 0, -1)
    return {r.decode().split(":", 1)[1] for r in raw}


def test_the_pushers_connection_survives_redis_down_and_a_restart(
    rt: Container, private_redis: devservices.RedisHandle
) -> None:
    failures: list[tuple[int, QueueError]] = []
    rt.pusher(lambda count, exc: failures.append((count, exc)))  # the process's pusher, reporting here
    first = submit(rt, TENANT, request()).task
    assert rt.flush_pushes(10) and first.id in _ready(rt) and not failures

    private_redis.kill()
    lost = submit(rt, TENANT, request()).task  # accepted at its commit
    assert rt.flush_pushes(60), "a push to a Redis that is down must give up (redis-py's retries), not hang"
    assert [count for count, _ in failures] == [1]
    assert rt.store.get_task(TENANT, lost.id).status is Status.QUEUED  # type: ignore[union-attr]

    private_redis.start()  # empty, same port: the held connection is dead and the script gone
    back = submit(rt, TENANT, request()).task
    assert rt.flush_pushes(30)
    assert len(failures) == 1, failures
    assert back.id in _ready(rt)  # reconnected, script loaded again (NOSCRIPT), pushed
    assert lost.id not in _ready(rt)  # left to the sweeper's reconciliation, as before


def test_a_held_script_reloads_after_script_flush_and_keeps_its_connection(
    private_redis: devservices.RedisHandle,
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    held = HeldConnection(client).script("return redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])")
    failing = HeldConnection(client).script("return redis.error_reply('nope')")
    try:
        assert held(keys=["n"], args=[10]) == 11
        client.script_flush()  # this server's own: NOSCRIPT on the next EVALSHA
        assert held(keys=["n"], args=[10]) == 12
        with pytest.raises(redis.ResponseError, match="nope"):
            failing(keys=[], args=[])
        assert held(keys=["n"], args=[0]) == 3
        ids = {c["id"] for c in client.client_list()}
        assert held(keys=["n"], args=[0]) == 4
        assert {c["id"] for c in client.client_list()} == ids  # no new connection per call
    finally:
        held.close()
        failing.close()
        client.close()


@pytest.mark.parametrize("trigger", ["a reply owed too long", "too many replies owed"])
def test_a_hung_redis_never_holds_a_submit_and_loses_no_push(
    rt: Container, private_redis: devservices.RedisHandle, monkeypatch: pytest.MonkeyPatch, trigger: str
) -> None:
    if trigger == "too many replies owed":
        monkeypatch.setattr(unawaited, "OWED_SECONDS", 3600.0)  # only the count can pause it
    failures: list[tuple[int, QueueError]] = []
    rt.pusher(lambda count, exc: failures.append((count, exc)))  # the process's pusher, reporting here
    ids = [submit(rt, TENANT, request()).task.id]
    assert rt.flush_pushes(10) and set(ids) <= _ready(rt)
    pid = private_redis.pid
    assert pid is not None
    pusher = rt.unawaited_push(lambda count, exc: None)
    slowest = 0.0
    os.kill(pid, signal.SIGSTOP)
    try:

        def paused() -> bool:
            nonlocal slowest
            t = time.monotonic()
            ids.append(submit(rt, TENANT, request()).task.id)  # accepted at its commit
            slowest = max(slowest, time.monotonic() - t)
            return pusher._cool_until > time.monotonic()

        # Replies owed past OWED_SECONDS, or MOST_OWED of them: the owed tasks go to the
        # pusher thread (which waits on the hung server off the submitting thread), and so
        # do later pushes.
        wait_for(paused, timeout=20, interval=0.1 if trigger.startswith("a reply") else 0.0, message="paused")
        if trigger == "too many replies owed":
            assert len(ids) - 1 >= unawaited.MOST_OWED  # every push written until then
        ids.append(submit(rt, TENANT, request()).task.id)
    finally:
        os.kill(pid, signal.SIGCONT)
    # A submit waits on nothing of Redis's but its write: the bound is loose for a
    # loaded machine, and half the client's 10 s read timeout that an awaited push
    # would have waited for.
    assert slowest < 5.0, slowest
    assert rt.flush_pushes(30)
    assert not failures, failures  # the pusher thread's own pushes got through once Redis answered
    assert set(ids) <= _ready(rt)


def test_a_flushed_script_cache_hands_the_push_to_the_pusher_thread(
    rt: Container, private_redis: devservices.RedisHandle
) -> None:
    first = submit(rt, TENANT, request()).task
    assert rt.flush_pushes(10) and first.id in _ready(rt)
    conn = rt.unawaited_push(lambda count, exc: None)._held
    client = redis.Redis.from_url(private_redis.url)
    try:
        client.script_flush()  # this test's own server: NOSCRIPT for the next EVALSHA
    finally:
        client.close()
    second = submit(rt, TENANT, request()).task  # its reply, NOSCRIPT, is read after the commit
    assert rt.flush_pushes(10) and second.id in _ready(rt)
    assert rt._pusher is not None  # the pusher thread's script reloaded itself and pushed it
    third = submit(rt, TENANT, request()).task  # on the same connection, its script loaded again
    assert rt.flush_pushes(10) and third.id in _ready(rt)
    assert rt.unawaited_push(lambda count, exc: None)._held is conn
