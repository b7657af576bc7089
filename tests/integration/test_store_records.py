"""Every public Store method hands out typed records, never dict rows, against the real
PostgreSQL: the named queries' columns match the records' ``from_row``."""

from __future__ import annotations

import uuid
from dataclasses import fields, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.container import Container
from chalicelib.core.model import Claimed, NewTask, Outcome, Priority, Status, Task
from chalicelib.core.records import (
    ApiKeyRecord,
    Cancellation,
    ExpiredLease,
    HeldLease,
    IdempotentTask,
    LiveTask,
    NewApiKey,
    ReadyTask,
    Recorded,
    Schedule,
    ScheduleRun,
    ScheduleSpec,
    StoredKey,
    TaskEvent,
    TaskState,
    WebhookHook,
)
from chalicelib.core.stats import MetricTotal, QueueGauge, StatsSnapshot
from tests.helpers import query

TENANT = "records"


def _typed(value: Any, cls: type) -> None:
    """``value`` is a ``cls`` whose fields hold no raw driver values (UUIDs, dicts of rows)."""
    assert isinstance(value, cls), f"{type(value).__name__} is not {cls.__name__}"
    assert is_dataclass(value)
    for f in fields(value):
        assert not isinstance(getattr(value, f.name), uuid.UUID), f"{cls.__name__}.{f.name} is a UUID"


def _new(key: str | None = None, *, delay: float | None = None) -> NewTask:
    return NewTask(
        id=str(uuid.uuid4()),
        tenant=TENANT,
        name="noop",
        priority="high",
        payload_json='{"a": 1}',
        max_retries=3,
        timeout_seconds=30,
        delay_seconds=delay,
        idempotency_key=key,
        request_hash="h" if key else None,
    )


def test_task_paths_return_records(rt: Container) -> None:
    store = rt.store
    ready, later = store.insert_tasks([_new("k1"), _new(delay=3600)])
    _typed(ready, Task)
    assert later.status is Status.PENDING
    found = store.tasks_by_idempotency_keys(TENANT, ["k1"])
    _typed(found["k1"], IdempotentTask)
    assert found["k1"].task.id == ready.id and found["k1"].request_hash == "h"

    [page] = list(store.live_tasks(Status.QUEUED))
    assert [t.id for t in page] == [ready.id]
    _typed(page[0], LiveTask)
    assert page[0].priority is Priority.HIGH and page[0].enqueued_ms > 0
    older = store.queued_older_than(-60, limit=10)
    assert [t.id for t in older] == [ready.id]
    _typed(older[0], ReadyTask)

    token = str(uuid.uuid4())
    [claimed] = store.claim([ready.id], token, 0.05, actor="t")
    _typed(claimed, Claimed)
    assert claimed.id == ready.id and claimed.payload == {"a": 1} and claimed.wait_seconds is not None
    [held] = store.extend_leases([ready.id], token, 0.05)
    _typed(held, HeldLease)
    assert held == HeldLease(ready.id, False)
    states = {s.id: s for s in store.statuses_of([ready.id, later.id])}
    _typed(states[ready.id], TaskState)
    assert states[ready.id].status is Status.PROCESSING and states[later.id].enqueued_ms is None

    sql = "UPDATE tasks SET lease_expires_at = now() - interval '1 s' WHERE id = %s RETURNING id"
    assert query(rt.settings.database_url, sql, ready.id)
    seen: list[ExpiredLease] = []

    def decide(lease: ExpiredLease) -> Outcome:
        seen.append(lease)
        return Outcome(lease.id, lease.lease_token, Status.PENDING, error="lease", delay_seconds=0.0)

    [rescued] = store.rescue_expired(decide, limit=10)
    _typed(seen[0], ExpiredLease)
    assert seen[0].lease_token == token and seen[0].attempts == 1
    _typed(rescued, Recorded)
    assert rescued.status is Status.PENDING and rescued.run_at_ms > 0 and rescued.hook_id is None
    [promoted] = store.promote_due(limit=10)
    _typed(promoted, ReadyTask)
    events = store.task_events(ready.id)
    for e in events:
        _typed(e, TaskEvent)
    assert [(e.from_status, e.to_status) for e in events][-2:] == [
        (Status.PROCESSING, Status.PENDING),
        (Status.PENDING, Status.QUEUED),
    ]
    assert events[-2].error == "lease"

    hooked = replace(_new(), callback_url="https://example.com/hook")
    [task] = store.insert_tasks([hooked])
    cancelled = store.cancel(TENANT, task.id)
    _typed(cancelled, Cancellation)
    assert cancelled is not None and cancelled.before is Status.QUEUED and cancelled.task.status is Status.CANCELLED
    _typed(cancelled.hook, WebhookHook)
    assert store.cancel(TENANT, str(uuid.uuid4())) is None


def test_keys_schedules_and_numbers_return_records(rt: Container) -> None:
    store = rt.store
    key = NewApiKey(str(uuid.uuid4()), TENANT, "ci", "tl_abcdefgh", "hash-1", 60, None)
    created = store.insert_api_key(key, actor="cli:test")
    _typed(created, ApiKeyRecord)
    assert store.insert_api_key(key, actor="cli:test") is None
    stored = store.api_key_by_hash("hash-1")
    _typed(stored, StoredKey)
    assert stored is not None and stored.active and stored.key == created
    assert store.list_api_keys(TENANT) == [created]
    revoked = store.revoke_api_key("tl_abcdefgh", actor="cli:test")
    assert revoked is not None and revoked.disabled_at is not None
    assert revoked.state(datetime.now(UTC)) == "revoked"

    spec = ScheduleSpec("s", "* * * * * *", "UTC", "noop", {"x": 1}, "normal", 3, 30, True, "once")
    due = datetime.now(UTC) - timedelta(seconds=1)
    schedule = store.insert_schedule(TENANT, str(uuid.uuid4()), spec, due, actor="key:test")
    _typed(schedule, Schedule)
    assert schedule is not None and schedule.spec == spec
    assert store.list_schedules(TENANT) == [schedule] and store.get_schedule(TENANT, schedule.id) == schedule
    plans: list[tuple[Schedule, datetime]] = []

    def plan(s: Schedule, now: datetime) -> tuple[datetime | None, datetime]:
        plans.append((s, now))
        return s.next_fire_at, now + timedelta(hours=1)

    [fired] = store.fire_due_schedules(plan)
    assert plans[0][0] == schedule and fired.schedule_id == schedule.id
    [run] = store.schedule_runs(schedule.id)
    _typed(run, ScheduleRun)
    assert run.task_id == fired.id and run.status is Status.QUEUED

    store.fold_metric_deltas()
    totals = store.metric_totals()
    assert totals and all(isinstance(t, MetricTotal) for t in totals)
    gauges = store.queue_gauges()
    assert any(isinstance(g, QueueGauge) and g.status == "QUEUED" and g.n == 1 for g in gauges)
    snapshot = store.tenant_stats(TENANT)
    assert isinstance(snapshot, StatsSnapshot)
    assert sum(c.n for c in snapshot.submitted) == 1 and snapshot.live[0].oldest_enqueued_at is not None


def test_claim_and_heartbeat_relax_durability_for_their_own_transaction_only(rt: Container) -> None:
    """The claim and the heartbeat commit with synchronous_commit off (queries.sql says
    why); the setting is transaction-local, so the pooled connection that ran them is
    durable again for the next statement (a submit or an outcome)."""
    store = rt.store
    [ready] = store.insert_tasks([_new()], actor="t")
    token = str(uuid.uuid4())
    assert [c.id for c in store.claim([ready.id], token, 30, actor="t")] == [ready.id]
    assert store.extend_leases([ready.id], token, 30) == [HeldLease(ready.id, False)]
    for _ in range(4):  # the pool's connections, whichever ran the claim
        with store.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
            assert row is not None and row["synchronous_commit"] == "on"


def test_claim_returns_the_ids_in_the_order_given_and_a_duplicate_once(rt: Container) -> None:
    store = rt.store
    tasks = store.insert_tasks([_new() for _ in range(5)], actor="t")
    ids = [t.id for t in reversed(tasks)]
    asked = [ids[0], *ids, ids[2]]  # duplicates: the first place counts
    claimed = store.claim(asked, str(uuid.uuid4()), 30, actor="t")
    assert [c.id for c in claimed] == ids
