"""Model-based test of the task state machine against the real store.

Hypothesis drives random sequences of every operation that moves a task
(submit, claim, finish under the right or a stale token, cancel, lease expiry
and rescue, promotion, redrive) and checks after each step that PostgreSQL
agrees with a simple model, and that no recorded transition is illegal.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from chalicelib.container import Container
from chalicelib.core.model import FINAL_STATUSES, TRANSITIONS, NewTask, Outcome, Status
from chalicelib.core.records import ExpiredLease

TENANT = "sm"
OUTCOMES = [Status.COMPLETED, Status.PENDING, Status.FAILED, Status.CANCELLED]


def test_no_illegal_transition_is_ever_accepted(rt: Container) -> None:
    db = rt.settings.database_url

    class TaskMachine(RuleBasedStateMachine):
        @initialize()
        def reset(self) -> None:
            # DELETE, not TRUNCATE: a TRUNCATE gives each table, partition and index a new
            # file (0.1 s here unloaded, far more on a busy machine: forty examples pay it),
            # where deleting one example's few rows takes a millisecond; task_deps go with
            # the tasks (ON DELETE CASCADE), and no trigger fires on a delete.
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("DELETE FROM task_events; DELETE FROM tasks")
            self.status: dict[str, Status] = {}
            self.token: dict[str, str] = {}
            self.cancel_requested: dict[str, bool] = {}

        def _ids(self) -> list[str]:
            # Insertion order, not sorted: the ids are random uuids, and an order that
            # changes between runs makes Hypothesis replay a different scenario.
            return list(self.status)

        # --- rules -------------------------------------------------------------------

        @rule(delayed=st.booleans())
        def submit(self, delayed: bool) -> None:
            task = NewTask(
                id=str(uuid.uuid4()),
                tenant=TENANT,
                name="noop",
                priority="normal",
                payload_json="{}",
                max_retries=3,
                timeout_seconds=30,
                delay_seconds=3600.0 if delayed else None,
            )
            [row] = rt.store.insert_tasks([task])
            self.status[row.id] = Status.PENDING if delayed else Status.QUEUED
            self.cancel_requested[row.id] = False

        @rule(data=st.data())
        def claim(self, data: st.DataObject) -> None:
            if not self.status:
                return
            ids = data.draw(st.lists(st.sampled_from(self._ids()), max_size=4, unique=True))
            token = str(uuid.uuid4())
            rows = rt.store.claim(ids, token, 30, actor="sm")
            got = {t.id for t in rows}
            # Only QUEUED rows are claimable here (PENDING ones are an hour from due).
            assert got == {i for i in ids if self.status[i] is Status.QUEUED}
            for i in got:
                self.status[i] = Status.PROCESSING
                self.token[i] = token

        @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES), stale=st.booleans())
        def finish(self, data: st.DataObject, outcome: Status, stale: bool) -> None:
            if not self.status:
                return
            i = data.draw(st.sampled_from(self._ids()))
            token = str(uuid.uuid4()) if stale or i not in self.token else self.token[i]
            o = Outcome(i, token, outcome, result_json="{}", error=None, delay_seconds=3600.0)
            rows = rt.store.finish([o], actor="sm")
            accepted = self.status[i] is Status.PROCESSING and token == self.token.get(i)
            assert bool(rows) == accepted
            if accepted:
                new = outcome
                if outcome is Status.PENDING and self.cancel_requested[i]:
                    new = Status.CANCELLED
                self.status[i] = new
                self.token.pop(i)

        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            if not self.status:
                return
            i = data.draw(st.sampled_from(self._ids()))
            done = rt.store.cancel(TENANT, i)
            assert done is not None
            task, before = done.task, done.before
            assert before is self.status[i]
            if before in (Status.PENDING, Status.QUEUED):
                self.status[i] = Status.CANCELLED
            elif before is Status.PROCESSING:
                self.cancel_requested[i] = True
            assert task.status is self.status[i]

        @rule(data=st.data())
        def expire_and_rescue(self, data: st.DataObject) -> None:
            processing = [i for i in self._ids() if self.status[i] is Status.PROCESSING]
            if not processing:
                return
            i = data.draw(st.sampled_from(processing))
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (i,))

            def decide(lease: ExpiredLease) -> Outcome:
                return Outcome(lease.id, lease.lease_token, Status.PENDING, error="lease", delay_seconds=3600.0)

            rescued = rt.store.rescue_expired(decide, limit=100)
            assert [r.id for r in rescued] == [i]
            self.status[i] = Status.CANCELLED if self.cancel_requested[i] else Status.PENDING
            self.token.pop(i)

        @rule(data=st.data())
        def make_due_and_promote(self, data: st.DataObject) -> None:
            pending = [i for i in self._ids() if self.status[i] is Status.PENDING]
            if not pending:
                return
            i = data.draw(st.sampled_from(pending))
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("UPDATE tasks SET run_at = now() - interval '1 second' WHERE id = %s", (i,))
            promoted = {t.id for t in rt.store.promote_due(limit=100)}
            assert promoted == {i}
            self.status[i] = Status.QUEUED

        @rule(data=st.data())
        def redrive(self, data: st.DataObject) -> None:
            if not self.status:
                return
            i = data.draw(st.sampled_from(self._ids()))
            redriven = rt.store.redrive(TENANT, ids=[i])
            assert bool(redriven) == (self.status[i] is Status.FAILED)
            if redriven:
                self.status[i] = Status.QUEUED
                self.cancel_requested[i] = False

        # --- invariants --------------------------------------------------------------

        @invariant()
        def database_agrees_with_model(self) -> None:
            if not getattr(self, "status", None):
                return
            with psycopg.connect(db) as conn:
                rows = conn.execute(
                    "SELECT id::text, status, finished_at, lease_token FROM tasks WHERE tenant = %s", (TENANT,)
                ).fetchall()
            assert {r[0]: Status(r[1]) for r in rows} == self.status
            for _, status, finished_at, lease_token in rows:
                assert (finished_at is not None) == (Status(status) in FINAL_STATUSES)
                assert (lease_token is not None) == (status == Status.PROCESSING)

        @invariant()
        def every_recorded_transition_is_legal(self) -> None:
            if not getattr(self, "status", None):
                return
            with psycopg.connect(db) as conn:
                events = conn.execute(
                    "SELECT task_id::text, from_status, to_status, at FROM task_trail ORDER BY id"
                ).fetchall()
            last: dict[str, tuple[str, datetime]] = {}
            for task_id, from_status, to_status, at in events:
                if from_status is None:
                    assert task_id not in last, "a task was created twice"
                else:
                    assert (Status(from_status), Status(to_status)) in TRANSITIONS
                    assert last[task_id][0] == from_status, "an event does not continue from the last state"
                last[task_id] = (to_status, at)
            assert {k: Status(v[0]) for k, v in last.items()} == self.status

    run_state_machine_as_test(
        TaskMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
