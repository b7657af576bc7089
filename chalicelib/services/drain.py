"""Drain use case: claim a batch → mark PROCESSING → run executors → record → ack.

Loops until its time budget is spent (the Lambda's remaining time minus a margin)
or the queue has stayed empty for ``idle_exit_seconds``.  While idle it blocks on
Redis for a wake token, so a new task starts within milliseconds.  Several
drains may run at once: Redis hands each id to one claimer, and PostgreSQL's
guarded UPDATE turns away any duplicate.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from chalicelib.adapters.aws.wake import mark_alive
from chalicelib.adapters.postgres.sent_finish import SentFinish
from chalicelib.container import Container
from chalicelib.core.batchsize import BatchSizer
from chalicelib.core.errors import QueueError, StoreError, UnavailableError, ValidationError
from chalicelib.core.ids import lease_tokens
from chalicelib.core.model import Claimed, Outcome, QueueEntry, Status
from chalicelib.core.records import Recorded
from chalicelib.execution.outcomes import refused_outcome
from chalicelib.execution.runner import BatchRunner
from chalicelib.execution.window import Window
from chalicelib.observability import metrics
from chalicelib.observability.batchlog import FinishedSummary
from chalicelib.observability.log import logger
from chalicelib.services import deadlines, dependencies, outbox
from chalicelib.tasktypes.context import TaskPorts

Clock = Callable[[], float]  # seconds of budget left


@dataclass
class DrainStats:
    batches: int = 0
    claimed: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    lease_lost: int = 0
    handed_back: int = 0  # not started, the invocation would end first (window.py); in retried too, as snoozes are
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "batches": self.batches,
            "claimed": self.claimed,
            "completed": self.completed,
            "retried": self.retried,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "expired": self.expired,
            "lease_lost": self.lease_lost,
            "handed_back": self.handed_back,
            "errors": self.errors[-5:],
        }


class _Claim:
    """One claim's lease token, the ids' task types and tenants, and when it was read."""

    def __init__(self, rt: Container, token: str, names: dict[str, str]) -> None:
        self.rt = rt
        self.token = token
        self.names = names
        self.tenants: dict[str, str] = {}
        self.claimed_at = 0.0

    def took(self, batch: list[Claimed]) -> list[Claimed]:
        """``batch``, the claim's answer, with its parents' results where it needs them
        (on whichever thread read the answer; the loop waits for it)."""
        if any(t.has_parents for t in batch):
            batch = dependencies.with_parent_results(self.rt, batch)
        self.claimed_at = time.monotonic()
        self.tenants.update({t.id: t.tenant for t in batch})
        self.names.update({t.id: t.name for t in batch})
        return batch


def worker_id() -> str:
    return f"drain:{socket.gethostname()}:{os.getpid()}"


def task_ports(rt: Container) -> TaskPorts:
    """What this process lends task types: settings, progress writes, the Redis client
    for once-per-task records, and webhook secrets (for the internal webhook type)."""
    return TaskPorts(
        settings=rt.settings, progress=rt.store, idempotency_redis=rt.queue.client, webhook_secrets=rt.store
    )


class Drainer:
    """One drain loop; keep one per process to reuse its executor threads."""

    def __init__(self, rt: Container, *, name: str | None = None) -> None:
        self.rt = rt
        self.name = name or worker_id()
        s = rt.settings
        self.runner = BatchRunner(
            rt.registry,
            rt.retry,
            concurrency=s.executor_concurrency,
            max_result_bytes=s.max_result_bytes,
            ports=task_ports(rt),
        )
        # Outcomes are recorded (UPDATE + events, then the Redis ack) on a thread of
        # their own while this loop claims and runs the next batch: the two commits of
        # a cycle overlap instead of adding up.  One batch in flight at most, plus the
        # outcomes the current batch handed over early (quick tasks beside slow ones).
        self._recorder = ThreadPoolExecutor(1, thread_name_prefix="tasklane-record")
        self._recording: list[Future[None]] = []
        self.sizer = BatchSizer(s.drain_batch_size, s.drain_batch_min)
        self.summary = FinishedSummary(self.name)
        self._tokens = lease_tokens()
        # The loop's wake waits and claims go on a Redis connection of its own, not
        # through the client's pool (None for a cluster client): they are the Redis
        # half of the path from a push to the task's start.  One run at a time uses it.
        self._held = rt.queue.hold_connection()
        # Its claim statements likewise go on one connection of the store's pool that
        # it keeps (None for a small pool); the recorder's finishes share the rest.
        self._held_pg = rt.store.hold_connection()
        self._warmed = False
        self._window: Callable[[], Window] | None = None  # run's, under a hard deadline

    def run(
        self, remaining: Clock, *, idle_exit_seconds: float | None = None, hard_deadline: bool = False
    ) -> DrainStats:
        """Drain until ``remaining()`` drops below the margin, or the queue has been
        empty for ``idle_exit_seconds`` (None: until the budget is spent).  ``hard_deadline``
        (a Lambda invocation, which ends with ``remaining()``): a task that would outlast
        it is handed back unstarted and the run claims no more (``execution/window.py``)."""
        s = self.rt.settings
        stats = DrainStats()
        self._window = self._windows(remaining) if hard_deadline else None
        idle_since: float | None = None
        failures = 0
        # After a claim that came back short the queue was dry: wait for a wake token
        # before claiming again.  Every id pushed since brings a token, so none waits
        # longer for it; what it saves is the empty claim that would come first, and the
        # token that claim leaves behind, which would end the next wait at once for
        # another empty claim.  Waits at most the idle wait (delayed ids fall due, a
        # throttled type's bucket refills: only a claim sees those).  On the held
        # connection the wait goes to Redis in one write with the claim that follows:
        # Redis runs the claim as the token arrives (``HeldConnection.arm``).
        dry = False
        while remaining() > s.drain_margin_seconds:
            # Lets the API see a live drainer (chalicelib.adapters.aws.wake).
            mark_alive(self.rt.settings, self.rt.queue.presence)
            try:
                wait = min(s.drain_idle_wait_seconds, remaining() - s.drain_margin_seconds)
                if dry and wait > 0:
                    if not self._warmed:
                        self._warm()
                    self.summary.flush_due()
                    self.rt.queue.wait_for_work(wait, held=self._held)
                asked = self.sizer.size
                ids = self.rt.queue.claim(asked, s.lease_seconds, held=self._held)
                dry = len(ids) < asked
                if not ids:
                    self.sizer.observe(asked, 0, 0.0)
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if idle_exit_seconds is not None and now - idle_since >= idle_exit_seconds:
                        break
                    continue
                idle_since = None
                if len(ids) == asked:
                    # More is probably waiting: let an idle peer start on it now.
                    self.rt.queue.wake()
                self.sizer.observe(asked, len(ids), self._run_batch(ids, stats, send_finish=dry))
                failures = 0
                if stats.handed_back:
                    break  # out of time for what the queue holds: the next invocation runs it (window.py)
            except UnavailableError as exc:
                # PostgreSQL or Redis is away.  Ids already moved to the lease set stay
                # there and the sweeper hands them out again; back off and retry.
                failures += 1
                stats.errors.append(str(exc))
                delay = min(0.1 * 2**failures, 5.0, max(remaining() - s.drain_margin_seconds, 0))
                logger.warning("drain backing off", extra={"error": str(exc), "delay": delay})
                time.sleep(delay)
        self._wait_recording(stats)
        self.summary.flush()
        return stats

    def _windows(self, remaining: Clock) -> Callable[[], Window]:
        """The invocation's window as of each batch; a fresh invocation's time is this
        one's at its start (the function's timeout, less a cold start)."""
        margin = self.rt.settings.drain_margin_seconds
        fresh = remaining() - margin
        return lambda: Window(time.monotonic() + remaining() - margin, fresh)

    def _warm(self) -> None:
        """Open the claim's held PostgreSQL connection and one for the recorder's
        finishes, once, the first time the loop is about to wait for work.  Both open
        lazily (a Lambda that imports the app costs no connection), so otherwise the
        first burst paid for them: a backend's start-up and its first statement, about
        20-45 ms each on a busy 2-core machine, on the critical path of every drainer's
        first two batches at once (issue 14, round 11).  A failure is left to the
        claims, which back off as for any outage."""
        self._warmed = True
        try:
            self.rt.store.ping(self._held_pg)
            if self._held_pg is not None:
                self.rt.store.ping()
        except UnavailableError as exc:
            logger.info("drainer could not open its connections yet", extra={"error": str(exc)})

    def close(self) -> None:
        self.runner.close()
        self._recorder.shutdown(wait=True)
        if self._held is not None:
            self._held.close()
        if self._held_pg is not None:
            self._held_pg.close()

    def _wait_recording(self, stats: DrainStats) -> None:
        """Wait until the previous batch's outcomes are recorded.  If recording gave up
        (PostgreSQL away for most of a lease), those tasks keep their leases and the
        sweeper retries them; the loop goes on."""
        pending, self._recording = self._recording, []
        for fut in pending:
            try:
                fut.result()
            except UnavailableError as exc:
                stats.errors.append(str(exc))
                logger.warning("outcomes not recorded; the sweeper will rescue them", extra={"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop every later batch too
                stats.errors.append(f"{type(exc).__name__}: {exc}")
                logger.exception("recording a batch failed; the sweeper will rescue its tasks")

    def _run_batch(self, names: dict[str, str], stats: DrainStats, *, send_finish: bool = False) -> float:
        """``names`` maps the claimed ids to their task type (as Redis knows it).
        Returns the seconds the batch's tasks ran (0.0 if none did): what the batch
        sizer goes by.  Not the claim statement or the wait for the previous batch's
        recording: on a fresh connection those took 50-120 ms on a busy 2-core machine,
        the sizer read them as slow tasks, and each drainer ramped 10, 29, 139, 500
        instead of 10, 80, 500 (issue 14, round 11).

        ``send_finish``: the claim that found these ids also found the queue dry, so
        the next claim can wait.  Then the claim statement is written here and its rows
        read by the lane that runs the first task (``sent_claim.py``), and the batch's
        finish statement leaves from the lane that decides its last outcome (``_run``)."""
        s = self.rt.settings
        claim = _Claim(self.rt, next(self._tokens), names)
        ids = list(names)
        store = self.rt.store
        if send_finish:
            sent = store.send_claim(ids, claim.token, s.lease_seconds, actor=self.name, held=self._held_pg)
            if sent is not None:
                batch, ran = self._run(claim, stats, send_finish, read=lambda: claim.took(sent.batch()))
                self._tally(claim, batch, ids, stats)
                return ran
        batch = claim.took(store.claim(ids, claim.token, s.lease_seconds, actor=self.name, held=self._held_pg))
        self._tally(claim, batch, ids, stats)
        if not batch:
            return 0.0
        return self._run(claim, stats, send_finish, batch=batch)[1]

    def _tally(self, claim: _Claim, batch: list[Claimed], ids: list[str], stats: DrainStats) -> None:
        """Count a claim, and let go of the ids it did not claim."""
        metrics.log_claimed(self.name, batch)
        stats.batches += 1
        stats.claimed += len(batch)
        stale = [i for i in ids if i not in claim.tenants]
        if stale:
            # Duplicates, cancelled, finished, paused or expired tasks: nothing to run,
            # drop the lease entry; those past their deadline are finalised now.  (A
            # tenant running slot one took, if any, frees itself at the lease deadline.)
            self.rt.queue.ack(stale, names=claim.names)
            stats.expired += deadlines.expire_refused(self.rt, stale, actor=self.name)

    def _run(
        self,
        claim: _Claim,
        stats: DrainStats,
        send_finish: bool,
        *,
        batch: list[Claimed] | None = None,
        read: Callable[[], list[Claimed]] | None = None,
    ) -> tuple[list[Claimed], float]:
        """Run a claimed batch (``batch``, or what ``read()`` returns, on a lane) and
        hand its outcomes to the recorder; the batch and the seconds it ran.

        ``send_finish``: the claim found the queue dry, so the batch's finish statement
        leaves at once, from the lane thread that decides its last outcome (this thread
        when the supervisor decided it), and the recorder only reads its answer
        (``sent_finish.py``).  Handing the whole finish to the recorder cost it 0.15-0.24
        ms before it left (the recorder's wake-up, then its wait for the GIL); sent from
        this thread, woken by the lane, its statement started 0.12-0.13 ms after the send
        against 0.02-0.04 from the lane (this thread's Python went on beside the backend
        it had just woken), at 200 tasks/s on our 2-core VM (issue 14, round 19).  After
        a full claim the loop's next claim counts more, and the recorder takes the whole
        finish: encoding and sending a large batch's outcomes on this thread cost 2
        drainers 2-3 % of their rate."""
        s = self.rt.settings
        token, names, tenants = claim.token, claim.names, claim.tenants

        def heartbeat(still_running: list[str]) -> set[str]:
            try:
                held = self.rt.store.extend_leases(still_running, token, s.lease_seconds)
                self.rt.queue.extend(still_running, s.lease_seconds, names, tenants)
            except UnavailableError as exc:
                logger.warning("lease heartbeat failed", extra={"error": str(exc)})
                return set()
            return {lease.id for lease in held if lease.cancel_requested}

        def record_early(outcomes: list[Outcome]) -> None:
            # In order on the one recorder thread, behind the previous batch's outcomes.
            self._recording.append(
                self._recorder.submit(self._finish_batch, outcomes, names, tenants, claim.claimed_at, stats)
            )

        sent: list[tuple[list[Outcome], SentFinish | None]] = []

        def send_last(outcomes: list[Outcome]) -> Callable[[], object] | None:  # on the lane's thread
            statement = self.rt.store.send_finish(outcomes, actor=self.name)
            sent.append((outcomes, statement))
            # The lane reads the answer once the batch is done, so the connection is back in
            # the pool without waiting behind the recorder's queue (sent_finish.py).
            return None if statement is None else statement.recorded

        every, last = s.lease_seconds / 3, send_last if send_finish else None
        self.runner.window = None if self._window is None else self._window()
        handed_back = self.runner.handed_back
        started = time.monotonic()
        if read is not None:
            batch, outcomes = self.runner.run_read(
                read, token, heartbeat=heartbeat, heartbeat_every=every, on_outcomes=record_early, on_last=last
            )
            started = claim.claimed_at  # the tasks ran from when the lane had the rows
        else:
            outcomes = self.runner.run(
                batch or [], token, heartbeat=heartbeat, heartbeat_every=every, on_outcomes=record_early, on_last=last
            )
        ran = time.monotonic() - started if batch else 0.0
        stats.handed_back += self.runner.handed_back - handed_back  # every outcome is collected by now
        self._wait_recording(stats)
        if outcomes:  # not sent by a lane: a full claim, or the supervisor decided the last
            sent.append((outcomes, self.rt.store.send_finish(outcomes, actor=self.name) if send_finish else None))
        for done, statement in sent:
            self._recording.append(
                self._recorder.submit(self._finish_batch, done, names, tenants, claim.claimed_at, stats, statement)
            )
        return batch or [], ran

    def _finish_batch(
        self,
        outcomes: list[Outcome],
        names: dict[str, str],
        tenants: dict[str, str],
        claimed_at: float,
        stats: DrainStats,
        sent: SentFinish | None = None,
    ) -> None:
        """Record a batch's outcomes (``sent``: their statement, already written), then
        ack its leases and queue retries and hooks."""
        recorded = self._record(outcomes, sent)
        duration = time.monotonic() - claimed_at
        tally = metrics.log_finished(self.name, outcomes, recorded, duration)
        by_id = {r.id: r for r in recorded}
        lost = [o.id for o in outcomes if o.id not in by_id]
        if lost:
            stats.lease_lost += len(lost)
            logger.warning(
                "lease lost: outcomes not recorded (another attempt owns these tasks)",
                extra={"task_ids": lost[:20], "count": len(lost)},
            )
        requeue = [
            QueueEntry.webhook(r.hook_id, r.tenant, r.hook_enqueued_ms)
            for r in recorded
            if r.hook_id is not None and r.hook_enqueued_ms is not None
        ]
        for r in recorded:
            status = r.status
            if status is Status.COMPLETED:
                stats.completed += 1
            elif status is Status.PENDING:
                stats.retried += 1
                requeue.append(QueueEntry.due_at(r.id, r.tenant, r.priority, r.run_at_ms, r.name))
            elif status is Status.FAILED:
                stats.failed += 1
            elif status is Status.CANCELLED:
                stats.cancelled += 1
        try:
            # Leases released, retries delayed and webhooks queued in one round trip.
            self.rt.queue.ack([o.id for o in outcomes if o.id in by_id], requeue, names, tenants)
        except QueueError as exc:
            # PostgreSQL has the outcome; the sweeper cleans stale leases and re-adds retries.
            logger.warning("ack failed", extra={"error": str(exc)})
        if any(r.has_followers for r in recorded):
            # A trigger may have released tasks (dependents, a batch's follow-up): push now.
            outbox.release_quietly(self.rt)
        # Last: when its period is over, the summary writes its INFO line here.
        self.summary.add(tally, len(outcomes), len(lost), duration * 1000)

    def _record(self, outcomes: list[Outcome], sent: SentFinish | None = None) -> list[Recorded]:
        """Record outcomes, riding out a short PostgreSQL outage: the work is done and
        redoing it is the costlier choice.  Gives up before the leases expire.

        An outcome PostgreSQL refuses (a value the outcome's own checks missed) fails
        the one statement of its whole batch.  Then each is recorded alone, and the
        refused ones as failures that say why: neither the siblings nor the drainer
        go down with it, and the task does not run again to the same end."""
        recorded = sent.recorded() if sent is not None else None
        if recorded is not None:
            return recorded
        try:
            return self._finish(outcomes)
        except ValidationError as exc:
            logger.error("outcomes refused; recording them one by one", extra={"error": str(exc)[:500]})
        alone: list[Recorded] = []
        for outcome in outcomes:
            try:
                alone.extend(self._finish([outcome]))
            except ValidationError as exc:
                logger.error("outcome refused; recorded as failed", extra={"task_id": outcome.id, "error": str(exc)})
                alone.extend(self._finish([refused_outcome(outcome, exc)]))
        return alone

    def _finish(self, outcomes: list[Outcome]) -> list[Recorded]:
        """``Store.finish``, again after a ``StoreError`` until 80 % of a lease is gone."""
        deadline = time.monotonic() + self.rt.settings.lease_seconds * 0.8
        delay = 0.05
        while True:
            try:
                return self.rt.store.finish(outcomes, actor=self.name)
            except StoreError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
