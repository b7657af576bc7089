"""The drain loop's connections: its Redis wake waits and claims (issue 14 round 9) go
on a connection the drainer holds (``client.HeldConnection``), not through the
client's pool, and its claim statements (round 10) on a PostgreSQL connection it holds
(``postgres.held.HeldConnection``), not through the store's pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from psycopg_pool import PoolTimeout

from chalicelib.adapters.postgres.held import HOLD_MIN_POOL, HeldConnection
from chalicelib.adapters.postgres.store import Store
from chalicelib.container import Container
from chalicelib.core.errors import StoreError
from chalicelib.core.model import Status
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit
from tests.helpers import drain_once, request

TENANT = "loop-conn"


def test_the_drain_loop_waits_and_claims_on_a_connection_of_its_own(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_rt()

    def pool_path(*args: object, **kw: object) -> None:
        raise AssertionError("the drain loop went through the client's pool")

    first = submit(rt, TENANT, request()).task
    monkeypatch.setattr(rt.queue, "_claim", pool_path)
    monkeypatch.setattr(rt.queue.client, "blpop", pool_path)
    drainer = Drainer(rt, name="held")
    try:
        drain_once(rt, drainer=drainer)  # claims, then waits for a wake token while idle
        second = submit(rt, TENANT, request()).task
        stats = drain_once(rt, drainer=drainer)
    finally:
        drainer.close()
    assert stats["completed"] == 1 and not stats["errors"]
    for task in (first, second):
        assert rt.store.get_task(TENANT, task.id).status is Status.COMPLETED  # type: ignore[union-attr]


def test_the_drain_loop_claims_on_a_postgresql_connection_of_its_own(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_rt()
    loop_thread = threading.get_ident()
    checked_out: list[int] = []
    draining = threading.Event()
    getconn = rt.store._pool.getconn

    def counted(*args: Any, **kw: Any) -> Any:
        if draining.is_set() and threading.get_ident() == loop_thread:
            checked_out.append(1)
        return getconn(*args, **kw)

    # The loop runs on this thread: for noop tasks its only PostgreSQL statements are the
    # claims.  Each batch's finish is written by the lane thread that ran its task, on a
    # connection of the pool, and read by the recorder thread (sent_finish.py).
    monkeypatch.setattr(rt.store._pool, "getconn", counted)
    drainer = Drainer(rt, name="held-pg")
    tasks = []
    try:
        for _ in range(3):
            tasks.append(submit(rt, TENANT, request()).task)
            draining.set()
            stats = drain_once(rt, drainer=drainer)
            draining.clear()
            assert stats["completed"] == 1 and not stats["errors"]
    finally:
        drainer.close()
    # Once by the holder, for three claims; once more the first time the loop went
    # idle, opening the recorder's connection ahead of the next burst (``Drainer._warm``).
    assert checked_out == [1, 1]
    # Every connection is back in the pool: the finishes', and the held one (closed).
    stats = rt.store._pool.get_stats()
    assert stats["pool_available"] == stats["pool_size"]
    for task in tasks:
        assert rt.store.get_task(TENANT, task.id).status is Status.COMPLETED  # type: ignore[union-attr]


def _backend_of(held: HeldConnection, store: Store) -> int:
    with store.connection(held) as conn:
        row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
    assert row is not None
    return int(row["pid"])


def test_a_held_connection_that_broke_fails_that_claim_and_the_next_one_reconnects(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt()
    first, second = (submit(rt, TENANT, request()).task for _ in range(2))
    held = rt.store.hold_connection()
    assert held is not None
    try:
        assert rt.store.claim([first.id], "00000000-0000-0000-0000-000000000001", 30, actor="t", held=held)
        old = _backend_of(held, rt.store)
        with rt.store.connection() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        with pytest.raises(StoreError):
            rt.store.claim([second.id], "00000000-0000-0000-0000-000000000002", 30, actor="t", held=held)
        assert rt.store.get_task(TENANT, second.id).status is Status.QUEUED  # type: ignore[union-attr]
        claimed = rt.store.claim([second.id], "00000000-0000-0000-0000-000000000002", 30, actor="t", held=held)
        assert [c.id for c in claimed] == [second.id]
        assert _backend_of(held, rt.store) != old
    finally:
        held.close()


def test_a_held_connection_left_in_a_transaction_goes_back_to_the_pool(make_rt: Callable[..., Container]) -> None:
    rt = make_rt()
    held = rt.store.hold_connection()
    assert held is not None
    try:
        with rt.store.connection(held) as conn:
            conn.execute("BEGIN")
            conn.execute("SELECT set_config('tasklane.test_left_open', 'yes', true)")
        with rt.store.connection(held) as conn:
            assert conn.info.transaction_status is TransactionStatus.IDLE
            row = conn.execute("SELECT current_setting('tasklane.test_left_open', true) AS v").fetchone()
        assert row is not None and row["v"] != "yes"  # rolled back by the pool, not carried on
    finally:
        held.close()


def test_a_held_connection_is_one_of_the_pools(make_rt: Callable[..., Container]) -> None:
    # The process's connections stay within TASKLANE_POOL_MAX_SIZE (infra/deploy.md).
    rt = make_rt(pool_max_size=HOLD_MIN_POOL)
    held = rt.store.hold_connection()
    assert held is not None
    held_pid = _backend_of(held, rt.store)
    pool = rt.store._pool
    others = [pool.getconn(timeout=5) for _ in range(HOLD_MIN_POOL - 1)]
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.2)
    for conn in others:
        pool.putconn(conn)
    held.close()
    with rt.store.connection() as a, rt.store.connection() as b, rt.store.connection() as c:
        pids = {conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"] for conn in (a, b, c)}  # type: ignore[index]
    assert held_pid in pids  # back in the pool, still open


def test_a_small_pool_holds_no_connection_and_the_loop_claims_through_it(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(pool_max_size=HOLD_MIN_POOL - 1)
    assert rt.store.hold_connection() is None
    task = submit(rt, TENANT, request()).task
    stats = drain_once(rt)
    assert stats["completed"] == 1 and not stats["errors"]
    assert rt.store.get_task(TENANT, task.id).status is Status.COMPLETED  # type: ignore[union-attr]


def test_the_claim_after_a_wait_goes_in_one_write_and_runs_as_the_token_arrives(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 round 10: the loop's wait is armed ahead of its claim (``HeldConnection.arm``):
    one send for both, and the claim takes what the push that ended the wait brought."""
    rt = make_rt()
    held = rt.queue.hold_connection()
    assert held is not None
    held.command("PING")  # connected: the handshake's sends are not counted
    sends: list[object] = []
    real_send = held._conn.send_packed_command

    def counting(command: object, check_health: bool = True) -> None:
        sends.append(command)
        real_send(command, check_health)

    monkeypatch.setattr(held._conn, "send_packed_command", counting)
    pushed: list[str] = []

    def push_later() -> None:
        time.sleep(0.3)
        pushed.append(submit(rt, TENANT, request()).task.id)

    pusher = threading.Thread(target=push_later)
    try:
        started = time.monotonic()
        pusher.start()
        assert rt.queue.wait_for_work(5.0, held=held) is None  # armed: returns at once
        assert time.monotonic() - started < 0.3
        ids = rt.queue.claim(10, 30, held=held)
        waited = time.monotonic() - started
    finally:
        pusher.join(10)
        held.close()
    assert list(ids) == pushed and 0.3 <= waited < 5.0
    # The wait and the claim script in one write (a second claim follows only when the
    # first met a tenant it did not know: the script asks again with the tenant list).
    first = b"".join(bytes(chunk) for chunk in sends[0])  # type: ignore[attr-defined]
    assert first.startswith(b"*3\r\n$5\r\nBLPOP") and b"EVALSHA" in first


def test_an_armed_wait_that_times_out_still_runs_the_command(make_rt: Callable[..., Container]) -> None:
    rt = make_rt()
    held = rt.queue.hold_connection()
    assert held is not None
    try:
        rt.queue.wait_for_work(0.05, held=held)
        assert rt.queue.claim(10, 30, held=held) == {}
        rt.queue.client.set("loop-conn:not-a-list", "x")  # BLPOP on it is an error reply
        held.arm("BLPOP", "loop-conn:not-a-list", 0.05)
        assert held.command("PING") == b"PONG"  # the wait's error read and dropped, in step
        assert held.command("PING") == b"PONG"
    finally:
        rt.queue.client.delete("loop-conn:not-a-list")
        held.close()


def test_an_idle_drainer_opens_its_connections_once_before_the_first_task(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both open lazily; a burst's first batches paid for them on every drainer at once.
    rt = make_rt()
    pings: list[object] = []
    real_ping = rt.store.ping

    def ping(held: HeldConnection | None = None) -> None:
        pings.append(held)
        real_ping(held)

    monkeypatch.setattr(rt.store, "ping", ping)
    drainer = Drainer(rt, name="warm")
    try:
        assert drain_once(rt, drainer=drainer)["claimed"] == 0  # an empty queue: claim, then wait
        held = drainer._held_pg
        assert held is not None and held._conn is not None and not held._conn.closed
        stats = rt.store._pool.get_stats()
        assert stats["pool_size"] >= 2 and stats.get("pool_available", 0) >= 1, stats  # the recorder's
        drain_once(rt, drainer=drainer)
        first = submit(rt, TENANT, request()).task
        assert drain_once(rt, drainer=drainer)["completed"] == 1
    finally:
        drainer.close()
    assert pings == [held, None]  # once per drainer, not once per wait
    assert rt.store.get_task(TENANT, first.id).status is Status.COMPLETED  # type: ignore[union-attr]
