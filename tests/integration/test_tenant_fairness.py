"""Fair share between tenants at claim time, against real Redis (and PostgreSQL for the
flood test): a late tenant starts promptly behind another's backlog, weights split
the slots, priority and aging still hold across tenants, a rebuild keeps it all."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from chalicelib.adapters.redis.queue import Queue
from chalicelib.config import TypeLimit
from chalicelib.container import Container
from chalicelib.core.errors import QuotaExceededError
from chalicelib.core.model import Priority, QueueEntry
from chalicelib.observability import metrics
from chalicelib.services import tenants
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit_many
from chalicelib.services.sweep import sweep
from chalicelib.tasktypes.context import TaskContext
from tests.helpers import peak_running, query, request, status_counts, wait_for
from tools.cli.main import main as cli_main


def _push(
    queue: Queue,
    tenant: str,
    n: int,
    *,
    priority: Priority = Priority.NORMAL,
    at_ms: float | None = None,
    name: str = "noop",
) -> list[str]:
    at = time.time() * 1000 if at_ms is None else at_ms
    entries = [QueueEntry.ready(str(uuid.uuid4()), tenant, priority, at + i, name) for i in range(n)]
    queue.push(entries)
    return [e.id for e in entries]


def _owner(*groups: tuple[str, list[str]]) -> dict[str, str]:
    return {tid: tenant for tenant, ids in groups for tid in ids}


def test_late_tenant_interleaves_with_a_backlog_one_for_one(client: redis.Redis) -> None:
    q = Queue(client)
    a = _push(q, "a", 500, at_ms=time.time() * 1000 - 60_000)  # a minute older
    b = _push(q, "b", 20)
    owner = _owner(("a", a), ("b", b))
    order = [owner[i] for i in q.claim(40, 30)]
    assert Counter(order) == {"a": 20, "b": 20}
    assert all(order[i] != order[i + 1] for i in range(len(order) - 1)), order
    # b gone: a alone again, in its own order.
    assert list(q.claim(10, 30)) == a[20:30]


def test_weights_split_the_slots(client: redis.Redis) -> None:
    q = Queue(client)
    q.set_tenant_limits({"heavy": 4.0}, {})
    heavy, light = _push(q, "heavy", 100), _push(q, "light", 100)
    owner = _owner(("heavy", heavy), ("light", light))
    got = Counter(owner[i] for i in q.claim(40, 30))
    assert got == {"heavy": 32, "light": 8}


def test_priority_and_aging_still_hold_across_tenants(client: redis.Redis) -> None:
    q = Queue(client, aging_seconds=10)
    now = time.time() * 1000
    flood = _push(q, "a", 50, at_ms=now)
    [critical] = _push(q, "b", 1, priority=Priority.CRITICAL, at_ms=now + 1_000)
    [low] = _push(q, "c", 1, priority=Priority.LOW, at_ms=now - 1_000)
    [old_low] = _push(q, "d", 1, priority=Priority.LOW, at_ms=now - 25_000)  # waited past two bounds
    claimed = list(q.claim(60, 30))
    assert claimed[:2] == [critical, old_low]  # the critical beats everyone; the aged low beats fresh normal
    assert claimed.index(low) == 52  # a fresh low waits for the normal flood, whoever owns it
    assert [i for i in claimed if i in flood] == flood


def test_an_idle_tenant_banks_no_credit(client: redis.Redis) -> None:
    q = Queue(client)
    a = _push(q, "a", 300)
    b1 = _push(q, "b", 10)
    q.claim(20, 30)  # a and b share, b's set empties
    q.claim(100, 30)  # a alone for a while
    b2 = _push(q, "b", 50)
    owner = _owner(("a", a), ("b", b1 + b2))
    got = Counter(owner[i] for i in q.claim(20, 30))
    assert got == {"a": 10, "b": 10}  # shared again, not 20 for b


def test_max_running_caps_a_tenant_without_blocking_others(client: redis.Redis) -> None:
    q = Queue(client)
    q.set_tenant_limits({}, {"capped": 2})
    capped, free = _push(q, "capped", 10), _push(q, "free", 10)
    first = q.claim(6, 30)
    assert [i for i in first if i in capped] == capped[:2]
    assert len(first) == 6  # the free tenant took the rest
    assert not [i for i in q.claim(6, 30) if i in capped]  # still at the cap
    q.ack(capped[:1], tenants={capped[0]: "capped"})  # one finishes: one slot back
    assert [i for i in q.claim(10, 30) if i in capped] == capped[2:3]
    assert q.tenant_depths(["capped"]) == {"capped": (7, 2)}
    assert free  # (their order is covered above)


def test_due_retries_return_to_their_tenant_and_limited_types_compete_by_score(client: redis.Redis) -> None:
    q = Queue(client, limits={"typed": TypeLimit(concurrency=100)})
    now = time.time() * 1000
    retry = QueueEntry.due_at(str(uuid.uuid4()), "tenant:with:colons ü", Priority.NORMAL, now - 5_000, None)
    typed = QueueEntry.ready(str(uuid.uuid4()), "a", Priority.NORMAL, now - 3_000, "typed")
    q.push([retry, typed])
    fresh = _push(q, "a", 3, at_ms=now)
    assert list(q.claim(10, 30)) == [retry.id, typed.id, *fresh]
    assert q.depths() == {"ready": 0, "delayed": 0, "leased": 5}


# --- the black-box check, through PostgreSQL -------------------------------------------


def _drainers(rt: Container, n: int, stop: threading.Event) -> list[threading.Thread]:
    def run() -> None:
        d = Drainer(rt)
        try:
            d.run(lambda: 0.0 if stop.is_set() else 60.0)
        finally:
            d.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_small_tenant_starts_promptly_behind_a_20000_task_flood(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(executor_concurrency=8, drain_batch_size=100)  # claims of at most 100: the bound below
    db = rt.settings.database_url
    for _ in range(10):
        submit_many(rt, "flood", [request("noop") for _ in range(2_000)])
    stop = threading.Event()
    threads = _drainers(rt, 2, stop)
    try:
        # Let the flood get going, then the small tenant arrives.
        wait_for(lambda: query(db, "SELECT count(*) FROM tasks WHERE started_at IS NOT NULL")[0][0] >= 200)
        small = submit_many(rt, "small", [request("noop") for _ in range(100)])
        assert len(small) == 100
        (submitted_at,) = query(db, "SELECT now()")[0]  # the submit has returned: its tasks are in Redis
        wait_for(
            lambda: (
                query(db, "SELECT count(*) FROM tasks WHERE tenant = 'small' AND status = 'COMPLETED'")[0][0] == 100
            ),
            timeout=30,
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
    (last_small,) = query(db, "SELECT max(started_at) FROM tasks WHERE tenant = 'small'")[0]
    (ahead,) = query(
        db,
        "SELECT count(*) FROM tasks WHERE tenant = 'flood' AND started_at > %s AND started_at <= %s",
        submitted_at,
        last_small,
    )[0]
    # One for one from the first claim after the submit: 100 flood tasks interleaved,
    # plus at most the two batches (100 each) the drainers held when it arrived.
    # Without fair share all ~19,800 waiting flood tasks would start first.
    assert ahead <= 100 + 2 * rt.settings.drain_batch_size + 20, ahead


def test_rebuild_after_a_flush_keeps_tenants_apart(rt: Container) -> None:
    flood = submit_many(rt, "flood", [request("noop") for _ in range(300)])
    small = submit_many(rt, "small", [request("noop") for _ in range(10)])
    rt.queue.client.flushdb()
    assert sweep(rt).rebuilt
    owner = {s.task.id: "flood" for s in flood} | {s.task.id: "small" for s in small}  # type: ignore[union-attr]
    got = Counter(owner[i] for i in rt.queue.claim(20, 30))
    assert got == {"flood": 10, "small": 10}


# --- weights and quotas from PostgreSQL ------------------------------------------------


@pytest.fixture
def fresh_limits() -> Iterator[None]:
    tenants.forget_cached()
    yield
    tenants.forget_cached()


def test_max_queued_refuses_the_whole_request_with_a_429(rt: Container, fresh_limits: None) -> None:
    rt.store.set_tenant_limits("small", actor="test", max_queued=5)
    assert len(submit_many(rt, "small", [request("noop") for _ in range(4)])) == 4
    with pytest.raises(QuotaExceededError) as refused:
        submit_many(rt, "small", [request("noop") for _ in range(2)])  # 4 + 2 > 5: none of them
    err = refused.value
    assert err.status == 429 and err.headers == {"Retry-After": str(tenants.RETRY_AFTER_SECONDS)}
    assert err.details == {
        "quota": "max_queued",
        "limit": 5,
        "queued": 4,
        "requested": 2,
        "retry_after_seconds": tenants.RETRY_AFTER_SECONDS,
    }
    assert query(rt.settings.database_url, "SELECT count(*) FROM tasks WHERE tenant = 'small'")[0][0] == 4
    submit_many(rt, "small", [request("noop")])  # exactly at the quota is fine
    submit_many(rt, "other", [request("noop") for _ in range(50)])  # other tenants are not bound
    assert rt.queue.refusals() == {("max_queued", "small"): 2}
    stats = tenants.usage(rt, "small")
    assert stats == {"weight": 1.0, "max_queued": 5, "max_running": None, "queued": 5, "running": None}


def test_max_running_from_the_cli_caps_a_tenant_across_drainers(
    make_rt: Callable[..., Container],
    fresh_limits: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rt = make_rt(executor_concurrency=8)
    db = rt.settings.database_url
    monkeypatch.setenv("TASKLANE_DATABASE_URL", db)
    monkeypatch.setenv("TASKLANE_ACTOR", "ops")
    assert cli_main(["tenants", "set", "capped", "--max-running", "2", "--weight", "2"]) == 0
    assert sweep(rt).tenants_configured == 1  # copies the quota to Redis
    slow = submit_many(rt, "capped", [request("sleep", {"seconds": 0.3}) for _ in range(8)])
    fast = submit_many(rt, "free", [request("noop") for _ in range(200)])
    assert len(slow) == 8 and len(fast) == 200
    stop = threading.Event()
    threads = _drainers(rt, 3, stop)
    try:
        wait_for(lambda: status_counts(db) == {"COMPLETED": 208}, timeout=30, message="every task to complete")
    finally:
        stop.set()
        for t in threads:
            t.join()
    peak = peak_running(db, "tenant = %s", "capped")
    assert peak == 2, f"{peak} tasks of the capped tenant ran at once; its max_running is 2"
    # The free tenant did not wait for the capped one: its tasks ran while the capped
    # tenant's last ones (three rounds of two, >= 0.9 s in) were still waiting for a slot.
    [(free_before_last_capped,)] = query(
        db,
        "SELECT count(*) FROM tasks WHERE tenant = 'free'"
        " AND finished_at < (SELECT max(started_at) FROM tasks WHERE tenant = 'capped')",
    )
    assert free_before_last_capped > 0, "the free tenant waited for the capped one"
    [entry] = [e for e in rt.store.audit_entries("capped", action=None, limit=10, after=None)]
    assert (entry.action, entry.actor, entry.details["max_running"]) == ("tenant_limits.updated", "cli:ops", 2)
    assert cli_main(["tenants", "set", "capped", "--max-running", "none"]) == 0
    with pytest.raises(SystemExit):
        cli_main(["tenants", "set", "capped", "--max-queued", "lots"])
    capsys.readouterr()
    assert cli_main(["tenants", "list"]) == 0
    assert "capped" in capsys.readouterr().out
    assert rt.store.list_tenant_limits("capped")[0].max_running is None
    assert rt.store.list_tenant_limits("capped")[0].weight == 2.0  # untouched


def test_metrics_show_each_waiting_tenant(rt: Container) -> None:
    submit_many(rt, "acme", [request("noop") for _ in range(3)])
    text = metrics.render(rt.store, rt.queue)
    assert 'tasklane_tenant_ready_tasks{tenant="acme"} 3.0' in text


GATED = "flush-race-gated"


def test_drainers_and_sweepers_racing_through_a_flush_run_every_task_once_within_quotas(
    make_rt: Callable[..., Container], fresh_limits: None
) -> None:
    rt = make_rt(executor_concurrency=4)
    db = rt.settings.database_url
    released = threading.Event()

    def gated(payload: Any, ctx: TaskContext) -> Any:
        # Held until Redis has been flushed, so the flush lands while the capped tenant
        # fills its quota with leased tasks and has the rest waiting in the ready sets,
        # however the threads are scheduled (a flush timed by a poll could come after
        # the last task).
        assert released.wait(60), "the gate was never opened"
        ctx.wait(0.05)
        return payload

    rt.registry.task(GATED)(gated)
    rt.store.set_tenant_limits("capped", actor="test", max_running=3)
    rt.store.set_tenant_limits("heavy", actor="test", weight=2)
    sweep(rt)
    submit_many(rt, "heavy", [request("noop") for _ in range(300)])
    submit_many(rt, "light", [request("noop") for _ in range(100)])
    submit_many(rt, "capped", [request(GATED) for _ in range(30)])
    stop = threading.Event()

    def sweeping() -> None:
        while not stop.is_set():
            sweep(rt)
            stop.wait(0.05)

    threads = _drainers(rt, 3, stop) + [threading.Thread(target=sweeping) for _ in range(2)]
    for t in threads[3:]:
        t.start()
    capped_running = "SELECT count(*) FROM tasks WHERE tenant = 'capped' AND status = 'PROCESSING'"
    try:
        wait_for(lambda: query(db, capped_running) == [(3,)], timeout=60, message="the capped tenant's quota to fill")
        rt.queue.client.flushdb()  # Redis loses everything mid-run; the sweepers rebuild it
        released.set()
        wait_for(lambda: status_counts(db) == {"COMPLETED": 430}, timeout=60, message="every task to complete")
    finally:
        released.set()
        stop.set()
        for t in threads:
            t.join()
        rt.registry._by_name.pop(GATED)
    # From the rows, not by sampling them: exact whatever the machine's load.  The three
    # held across the flush reach the quota; nothing started beside them.
    peak = peak_running(db, "tenant = %s", "capped")
    assert peak == 3, f"{peak} tasks of the capped tenant ran at once; its max_running is 3"
    once = query(
        db, "SELECT count(*) FROM task_events WHERE to_status = 'PROCESSING' GROUP BY task_id HAVING count(*) > 1"
    )
    assert once == []
