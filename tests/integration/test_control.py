"""Pausing task types and cancelling by filter, on the service layer with real
PostgreSQL and Redis (the HTTP surface: test_control_api.py).

A paused (type, tenant) runs nothing until resumed while everything else flows; the
paused work waits in PostgreSQL only (not in Redis: no drainer or sweep keeps feeding
it back), and resume pushes it again.  Races are run with real concurrent drainers
and a sweeper, and the invariant is checked against the task events: no claim of a
paused type starts after the pause has committed."""

from __future__ import annotations

import socket

import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.adapters.redis.queue import Queue
from chalicelib.container import Container
from chalicelib.core.control import GLOBAL
from chalicelib.core.model import Status
from chalicelib.observability import metrics
from chalicelib.services import control
from chalicelib.services.submit import submit_many
from chalicelib.services.sweep import sweep
from tests.helpers import (
    drain_and_sweep_until,
    query,
    request,
    running_workers,
    story_problems,
    task_stories,
    wait_for,
)

A, B = "ctl-a", "ctl-b"
SLOW = "sleep"  # the type paused in these tests ({"seconds": 0} runs at once)


def _submit(rt: Container, tenant: str, name: str, n: int, *, seconds: float = 0, **kw: object) -> list[str]:
    payload = {"seconds": seconds} if name == SLOW else {}
    done = submit_many(rt, tenant, [request(name, payload, **kw) for _ in range(n)])
    return [s.task.id for s in done]  # type: ignore[union-attr]


def _statuses(rt: Container, ids: list[str]) -> dict[str, int]:
    rows = query(
        rt.settings.database_url, "SELECT status, count(*) FROM tasks WHERE id = ANY(%s::uuid[]) GROUP BY 1", ids
    )
    return {s: n for s, n in rows}


def _started(rt: Container, ids: list[str]) -> int:
    sql = "SELECT count(*) FROM task_events WHERE task_id = ANY(%s::uuid[]) AND to_status = 'PROCESSING'"
    return int(query(rt.settings.database_url, sql, ids)[0][0])


def _in_redis(rt: Container, ids: list[str]) -> int:
    """How many of ``ids`` any sorted set in the test's Redis db holds (ready sets, delayed
    members such as "<rank>:<id>", leases), whatever the queue's key layout."""
    client = rt.queue.client
    members: list[str] = []
    for key in client.scan_iter(match="*"):
        if client.type(key) in (b"zset", "zset"):
            members += [m.decode() if isinstance(m, bytes) else m for m in client.zrange(key, 0, -1)]
    return sum(1 for tid in ids if any(tid in m for m in members))


def test_a_paused_type_runs_nothing_until_resumed_while_others_flow(rt: Container) -> None:
    paused = _submit(rt, A, SLOW, 20)
    done = control.pause(rt, A, SLOW, actor="key:test")
    assert done.pause.changed and done.pause.scope == "tenant" and done.moved == 20
    assert not control.pause(rt, A, SLOW, actor="key:test").pause.changed  # idempotent, not re-audited
    late = _submit(rt, A, SLOW, 5)  # submitted while paused: refused by the claim
    others = _submit(rt, A, "noop", 20) + _submit(rt, B, SLOW, 10)  # another type; another tenant

    drain_and_sweep_until(rt, lambda: _statuses(rt, others) == {"COMPLETED": 30})
    sweep(rt)
    held = paused + late
    assert _statuses(rt, held) == {"QUEUED": 25} and _started(rt, held) == 0
    # Waiting in PostgreSQL only: sweeps do not push them back for the claim to refuse.
    assert _in_redis(rt, held) == 0

    resumed = control.resume(rt, A, SLOW, actor="key:test")
    assert resumed.lifted is not None and resumed.requeued == 25 and not resumed.still_paused
    assert control.resume(rt, A, SLOW, actor="key:test").lifted is None
    drain_and_sweep_until(rt, lambda: _statuses(rt, held) == {"COMPLETED": 25})
    assert story_problems(task_stories(rt.settings.database_url, held)) == []
    audit = query(
        rt.settings.database_url,
        "SELECT actor, action, subject_id, details->>'scope' FROM audit_log WHERE tenant = %s ORDER BY id",
        A,
    )
    assert audit == [
        ("key:test", "task_type.paused", SLOW, "tenant"),
        ("key:test", "task_type.resumed", SLOW, "tenant"),
    ]


def test_a_global_pause_holds_every_tenant_and_a_tenant_resume_does_not_lift_it(rt: Container) -> None:
    ids = _submit(rt, A, SLOW, 3) + _submit(rt, B, SLOW, 3)
    control.pause(rt, GLOBAL, SLOW, actor="cli:ops")
    control.pause(rt, A, SLOW, actor="key:a")
    assert {(p.name, p.scope) for p in control.pauses(rt, A)} == {(SLOW, "global"), (SLOW, "tenant")}
    assert [(p.name, p.scope) for p in control.pauses(rt, B)] == [(SLOW, "global")]

    undone = control.resume(rt, A, SLOW, actor="key:a")
    assert undone.lifted is not None and undone.still_paused and undone.requeued == 0
    drain_and_sweep_until(rt, lambda: True)
    assert _started(rt, ids) == 0

    lifted = control.resume(rt, GLOBAL, SLOW, actor="cli:ops")
    assert lifted.requeued == 6 and not lifted.still_paused
    drain_and_sweep_until(rt, lambda: _statuses(rt, ids) == {"COMPLETED": 6})


def test_rebuild_reconcile_and_promotion_keep_paused_work_out_of_redis(rt: Container) -> None:
    queued = _submit(rt, A, SLOW, 4)
    due = _submit(rt, A, SLOW, 2, delay_seconds=0.2)
    control.pause(rt, A, SLOW, actor="key:test")
    db = rt.settings.database_url
    query(
        db, "UPDATE tasks SET enqueued_at = now() - interval '1 hour' WHERE id = ANY(%s::uuid[]) RETURNING id", queued
    )
    wait_for(lambda: query(db, "SELECT bool_and(run_at <= now()) FROM tasks WHERE id = ANY(%s::uuid[])", due)[0][0])
    sweep(rt)  # reconcile (old QUEUED rows) and promotion (due PENDING)
    assert _statuses(rt, queued + due) == {"QUEUED": 6}
    rt.queue.client.flushdb()  # Redis lost everything: the sweeper rebuilds it
    report = sweep(rt)
    assert report.rebuilt and _in_redis(rt, queued + due) == 0
    control.resume(rt, A, SLOW, actor="key:test")
    assert _in_redis(rt, queued + due) == 6


def test_no_claim_starts_after_the_pause_commits_with_racing_drainers_and_a_sweeper(make_rt: object) -> None:
    rt: Container = make_rt(drain_batch_size=10, executor_concurrency=4)  # type: ignore[operator]
    db = rt.settings.database_url
    # 20 ms each, four at a time per drainer: the pause lands long before they are all done.
    paused = _submit(rt, A, SLOW, 400, seconds=0.02)
    flowing = _submit(rt, A, "noop", 200)
    with running_workers(rt, drainers=3) as errors:
        wait_for(lambda: _started(rt, paused) >= 20, message="the paused type to be running")
        control.pause(rt, A, SLOW, actor="key:race")
        (committed,) = query(db, "SELECT clock_timestamp()")[0]
        flowing += _submit(rt, A, "noop", 100)
        wait_for(lambda: _statuses(rt, flowing) == {"COMPLETED": 300}, timeout=30, message="other work to flow")
        late = query(
            db,
            "SELECT count(*) FROM task_events WHERE task_id = ANY(%s::uuid[]) AND to_status = 'PROCESSING' AND at > %s",
            paused,
            committed,
        )[0][0]
        assert late == 0
        held = _statuses(rt, paused).get("QUEUED", 0)
        assert held > 0
        control.resume(rt, A, SLOW, actor="key:race")
        wait_for(lambda: _statuses(rt, paused) == {"COMPLETED": 400}, timeout=30, message="resumed work to finish")
    assert errors == []
    assert story_problems(task_stories(db, paused + flowing)) == []


def test_cancel_by_filter_is_bounded_audited_and_follows_the_single_cancel_rules(rt: Container) -> None:
    db = rt.settings.database_url
    waiting = _submit(rt, A, "noop", 5, priority="low") + _submit(rt, A, "noop", 2, delay_seconds=3600, priority="low")
    keep = _submit(rt, A, "noop", 3, priority="high") + _submit(rt, B, "noop", 3, priority="low")
    running = _submit(rt, A, SLOW, 1, priority="low")
    query(
        db,
        "UPDATE tasks SET status = 'PROCESSING', attempts = 1, lease_token = gen_random_uuid(), "
        "lease_expires_at = now() + interval '1 minute', started_at = now() WHERE id = %s RETURNING id",
        running[0],
    )

    sel = control.CancelSelection(priority="low", limit=5)
    first = control.cancel_many(rt, A, sel, actor="key:test")
    assert (len(first.cancelled), len(first.requested), first.more) == (5, 0, True)
    second = control.cancel_many(rt, A, sel, actor="key:test")
    assert (len(second.cancelled), [t.id for t in second.requested], second.more) == (2, running, False)
    assert control.cancel_many(rt, A, sel, actor="key:test").more is False  # a requested cancel is not re-counted

    assert _statuses(rt, waiting) == {"CANCELLED": 7} and _statuses(rt, keep) == {"QUEUED": 6}
    assert query(db, "SELECT status, cancel_requested FROM tasks WHERE id = %s", running[0]) == [("PROCESSING", True)]
    assert _in_redis(rt, waiting) == 0
    assert story_problems(task_stories(db, waiting)) == []
    audit = query(db, "SELECT details FROM audit_log WHERE tenant = %s AND action = 'tasks.cancelled' ORDER BY id", A)
    assert [(d["cancelled"], d["cancel_requested"], d["filter"]) for (d,) in audit] == [
        (5, 0, {"priority": "low"}),
        (2, 1, {"priority": "low"}),
    ]
    by_status = control.cancel_many(rt, A, control.CancelSelection(status=Status.QUEUED), actor="key:test")
    assert sorted(t.id for t in by_status.cancelled) == sorted(keep[:3])


def test_pause_and_resume_hold_when_redis_is_down_and_the_sweeper_catches_up(rt: Container) -> None:
    ids = _submit(rt, A, SLOW, 3)
    alive = rt.queue
    dead = Queue(redis.Redis(host="127.0.0.1", port=_closed_port(), retry=Retry(NoBackoff(), 0)))
    rt.queue = dead
    try:
        assert control.pause(rt, A, SLOW, actor="key:test").moved == 0  # PostgreSQL decided; Redis missed it
    finally:
        rt.queue = alive
    drain_and_sweep_until(rt, lambda: _in_redis(rt, ids) == 0)  # refused by the claim, dropped from Redis
    assert _started(rt, ids) == 0
    rt.queue = dead
    try:
        assert control.resume(rt, A, SLOW, actor="key:test").requeued == 0
    finally:
        rt.queue = alive
    db = rt.settings.database_url
    query(db, "UPDATE tasks SET enqueued_at = now() - interval '1 hour' WHERE id = ANY(%s::uuid[]) RETURNING id", ids)
    drain_and_sweep_until(rt, lambda: _statuses(rt, ids) == {"COMPLETED": 3})  # the reconcile pushed them


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cancelled_counter(rt: Container) -> float:
    for family in text_string_to_metric_families(metrics.render(rt.store, rt.queue)):
        if family.name == "tasklane_tasks_cancelled":
            return sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels["task_name"] == "noop")
    return 0.0


def test_cancel_by_filter_counts_cancellations_and_fires_completion_webhooks(rt: Container) -> None:
    before = _cancelled_counter(rt)  # the counters outlive each test's tables
    hooked = _submit(rt, A, "noop", 2, delay_seconds=3600, callback_url="http://127.0.0.1:9/hook")
    done = control.cancel_many(rt, A, control.CancelSelection(name="noop"), actor="key:test")
    assert sorted(t.id for t in done.cancelled) == sorted(hooked)
    db = rt.settings.database_url
    hooks = query(
        db,
        "SELECT id::text, payload->'task'->>'id', status FROM tasks WHERE name = 'tasklane.webhook' ORDER BY 2",
    )
    assert [(h[1], h[2]) for h in hooks] == [(i, "QUEUED") for i in sorted(hooked)]
    assert _in_redis(rt, [h[0] for h in hooks]) == 2  # pushed: delivered without waiting for a sweep
    assert _cancelled_counter(rt) - before == 2.0


def test_cancel_by_filter_racing_drainers_ends_every_task_in_exactly_one_final_state(make_rt: object) -> None:
    rt: Container = make_rt(drain_batch_size=10)  # type: ignore[operator]
    ids = _submit(rt, A, SLOW, 300, seconds=0.01)
    cancelled: list[str] = []
    with running_workers(rt, drainers=2) as errors:
        wait_for(lambda: _started(rt, ids) >= 10, message="drainers to start")
        while True:
            done = control.cancel_many(rt, A, control.CancelSelection(name=SLOW, limit=50), actor="key:race")
            cancelled += [t.id for t in done.cancelled]
            if not done.more:
                break
        wait_for(lambda: set(_statuses(rt, ids)) <= {"COMPLETED", "CANCELLED"}, timeout=30, message="all final")
    assert errors == []
    assert cancelled and _statuses(rt, ids).get("COMPLETED")  # the cancels met a queue being drained
    assert _statuses(rt, cancelled) == {"CANCELLED": len(cancelled)} and _started(rt, cancelled) == 0
    assert story_problems(task_stories(rt.settings.database_url, ids)) == []
