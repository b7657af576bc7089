"""PostgreSQL adapter: the only place that talks to the database.

PostgreSQL is the source of truth.  Every method is one round trip (or one short
transaction) however many tasks it touches: arrays go in through ``unnest``, and
transitions write their events in the same statement.  Driver errors are
translated here into ``StoreError`` (503) or ``ValidationError`` (400).

Every public method returns typed records (``core.model.Task``, ``Claimed``, and
those of ``core.records`` and ``core.stats``), never rows: each record's
``from_row`` reads the columns of the query ``queries.sql`` names it under.  Rows
arrive as dicts (``dict_row``) rather than through ``class_row``, because most
records convert on the way in (enums, nested specs); on the hot path the SQL
casts ids to text, so the records cost no more than the dict rows once did.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import psycopg
from psycopg_pool import ConnectionPool

from chalicelib.adapters.postgres.archive import ArchiveQueries, archive_may_hold, read_both
from chalicelib.adapters.postgres.audit import AuditQueries
from chalicelib.adapters.postgres.batches import BatchQueries
from chalicelib.adapters.postgres.bulkcopy import BulkCopy
from chalicelib.adapters.postgres.claim_order import claim_params, claimed
from chalicelib.adapters.postgres.control import ControlQueries
from chalicelib.adapters.postgres.deadlines import DeadlineQueries
from chalicelib.adapters.postgres.direct import DirectStatement
from chalicelib.adapters.postgres.early_row import EarlyInsert
from chalicelib.adapters.postgres.errors import TRANSLATED, first_line, retry_conflicts, translated
from chalicelib.adapters.postgres.followers import FollowerQueries
from chalicelib.adapters.postgres.held import HeldConnection, hold
from chalicelib.adapters.postgres.inserts import InsertQueries
from chalicelib.adapters.postgres.rows import finish_params
from chalicelib.adapters.postgres.schedules import ScheduleQueries
from chalicelib.adapters.postgres.sent_claim import SentClaim
from chalicelib.adapters.postgres.sent_finish import FinishSender, SentFinish
from chalicelib.adapters.postgres.sessions import TCP_TIMEOUT_SECONDS, connection_options, snapshot
from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.adapters.postgres.tenants import TenantQueries
from chalicelib.core.errors import ConflictError, StoreError, ValidationError
from chalicelib.core.model import Claimed, Outcome, Status, Task
from chalicelib.core.records import (
    ApiKeyRecord,
    Cancellation,
    ExpiredLease,
    HeldLease,
    LiveTask,
    NewApiKey,
    ReadyTask,
    Recorded,
    StoredKey,
    TaskEvent,
    TaskState,
    WebhookHook,
)
from chalicelib.core.stats import (
    FinishedCount,
    LiveCount,
    MetricTotal,
    MinuteCount,
    QueueGauge,
    StatsClock,
    StatsSnapshot,
    SubmittedCount,
)

Row = dict[str, Any]
T = TypeVar("T")
# Before any event: the lower bound of a trail read without the task's created_at.
_BEGINNING = datetime.min.replace(tzinfo=UTC)


class Store(
    InsertQueries,
    AuditQueries,
    FollowerQueries,
    ControlQueries,
    BatchQueries,
    BulkCopy,
    DeadlineQueries,
    TenantQueries,
    ArchiveQueries,
    ScheduleQueries,
):
    """Task, event and API-key persistence on a small connection pool.

    The pool opens lazily on first use so importing the app (a Lambda cold
    start) costs no connection; a warm Lambda reuses it across invocations.
    """

    def __init__(
        self,
        url: str,
        *,
        max_size: int = 4,
        timeout: float = 5.0,
        prepare: bool = True,
        tcp_timeout_seconds: float = TCP_TIMEOUT_SECONDS,
        webhook_max_retries: int = 5,
        webhook_timeout_seconds: int = 10,
    ) -> None:
        self.url = url
        self._webhook = {"webhook_max_retries": webhook_max_retries, "webhook_timeout": webhook_timeout_seconds}
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs=connection_options(prepare=prepare, tcp_timeout_seconds=tcp_timeout_seconds),
            name="tasklane",
        )
        self._opened = False
        self._q = {**queries(), "list_tasks_anywhere": read_both(queries()["list_tasks"])}
        self._early = EarlyInsert(self._q["submit_lock"], self._q["insert_task_now"], prepare=prepare)
        self._claim = DirectStatement("tasklane_claim", self._q["claim"], prepare=prepare)
        self._finish_sender = FinishSender(self._pool, self._ensure_open, self._q["finish"], prepare=prepare)

    # --- plumbing -------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if not self._opened:
            self._pool.open(wait=False)
            self._opened = True

    def hold_connection(self) -> HeldConnection | None:
        """One of the pool's connections kept for the drain loop's claims (``held.hold``)."""
        return hold(self._pool, self._ensure_open)

    @contextmanager
    def connection(self, held: HeldConnection | None = None) -> Iterator[psycopg.Connection[Row]]:
        """A pooled autocommit connection (``held``'s, if given); database errors become
        Tasklane errors."""
        try:
            if held is not None:
                with held.connection() as kept:
                    yield kept
                return
            self._ensure_open()
            # getconn/putconn rather than the pool's ``connection()``, which also runs
            # ``with conn``: a ``commit()`` that on an autocommit connection has nothing to
            # commit but still takes psycopg's lock and its wait loop, ~5 us of the ~9 us a
            # check-out cost (issue 14 round 9).  A transaction is always a
            # ``conn.transaction()`` block, which ends itself; putconn rolls back anything
            # left open all the same, and replaces a broken connection.
            conn = self._pool.getconn()
            try:
                yield cast("psycopg.Connection[Row]", conn)
            finally:
                self._pool.putconn(conn)
        except TRANSLATED as exc:
            raise translated(exc) from exc

    def _all(self, name: str, params: dict[str, Any]) -> list[Row]:
        return self._statement(name, params, psycopg.Cursor.fetchall)

    def _one(self, name: str, params: dict[str, Any]) -> Row | None:
        return self._statement(name, params, psycopg.Cursor.fetchone)

    def _rowcount(self, name: str, params: dict[str, Any]) -> int:
        return self._statement(name, params, lambda cur: cur.rowcount)

    def _statement(self, name: str, params: dict[str, Any], take: Callable[[psycopg.Cursor[Row]], T]) -> T:
        """One statement in autocommit, what ``take`` reads of its cursor; run again when
        PostgreSQL rolled it back to end a deadlock (two keyed batches' INSERTs, a cancel
        settling a parent's children: ``retry_conflicts``)."""

        def run() -> T:
            with self.connection() as conn:
                return take(conn.execute(self._q[name], params))

        return retry_conflicts(run)

    def _transaction(self, work: Callable[[psycopg.Connection[Row]], T]) -> T:
        """``work`` in a transaction of its own, run again, all of it, when PostgreSQL
        rolled it back to end a deadlock (``retry_conflicts``): it may change nothing
        outside PostgreSQL."""

        def run() -> T:
            with self.connection() as conn, conn.transaction():
                return work(conn)

        return retry_conflicts(run)

    def close(self) -> None:
        if self._opened:
            self._pool.close()
            self._opened = False

    def ping(self, held: HeldConnection | None = None) -> None:
        """Raise ``StoreError`` unless PostgreSQL answers (on ``held``'s connection, if
        given: that opens it)."""
        with self.connection(held) as conn:
            conn.execute("SELECT 1")

    # --- submit and read -----------------------------------------------------------

    def get_task(self, tenant: str, task_id: str) -> Task | None:
        """The task, in ``tasks`` or, finished, in ``tasks_archive`` (migration 0027)."""
        params = {"id": task_id, "tenant": tenant}
        row = self._one("get_task", params) or self._one("get_task_anywhere", params)
        return Task.from_row(row) if row else None

    def list_tasks(
        self,
        tenant: str,
        *,
        status: str | None = None,
        name: str | None = None,
        priority: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[Task]:
        """A tenant's tasks, newest first; ``after`` is the (created_at, id) of the
        previous page's last row."""
        params = {
            "tenant": tenant,
            "status": status,
            "name": name,
            "priority": priority,
            "created_after": created_after,
            "created_before": created_before,
            "after_created": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        }
        rows = self._all("list_tasks", params)
        if archive_may_hold(rows, limit):  # finished tasks move there a day on (migration 0027)
            rows = self._all("list_tasks_anywhere", params)
        return [Task.from_row(r) for r in rows]

    def task_events(self, task_id: str, *, since: datetime | None = None) -> list[TaskEvent]:
        """The task's audit trail, oldest first.  ``since``, the task's ``created_at``
        when the caller has it, spares the partitions of the days before it."""
        params = {"id": task_id, "since": since or _BEGINNING}
        return [TaskEvent.from_row(r) for r in self._all("task_events", params)]

    # --- drain ---------------------------------------------------------------------

    def claim(
        self, ids: Sequence[str], token: str, lease_seconds: float, *, actor: str, held: HeldConnection | None = None
    ) -> list[Claimed]:
        """Mark the claimable ones of ``ids`` PROCESSING under ``token``; returns them.
        ``held``: the statement runs on that connection (``hold_connection``)."""
        if not ids:
            return []
        with self.connection(held) as conn:
            # libpq directly: the hot path (direct.py)
            rows = self._claim.rows(conn, claim_params(ids, token, lease_seconds, actor))
        return claimed(rows, ids)

    def send_claim(
        self, ids: Sequence[str], token: str, lease_seconds: float, *, actor: str, held: HeldConnection | None = None
    ) -> SentClaim | None:
        """``claim``'s statement written now, its rows left for ``SentClaim.batch`` on
        another thread (``sent_claim.py``); None, with nothing sent, when it cannot go
        that way (``claim`` then)."""
        params = claim_params(ids, token, lease_seconds, actor)
        with ExitStack() as stack:
            read = self._claim.send(stack.enter_context(self.connection(held)), params)
            return None if read is None else SentClaim(stack.pop_all(), read, list(ids))

    def finish(self, outcomes: Sequence[Outcome], *, actor: str) -> list[Recorded]:
        """Record outcomes; returns the tasks that changed (the others lost their lease)."""
        if not outcomes:
            return []
        # One statement, fenced by its tokens: safe to run again after a deadlock (_all).
        return [Recorded.from_row(r) for r in self._all("finish", finish_params(outcomes, actor, **self._webhook))]

    def send_finish(self, outcomes: Sequence[Outcome], *, actor: str) -> SentFinish | None:
        """``finish``'s statement written now, its answer left for ``SentFinish.recorded``
        on another thread (``sent_finish.py``); None when it cannot go that way."""
        if not outcomes:
            return None
        return self._finish_sender.send(finish_params(outcomes, actor, **self._webhook))

    def _finish(self, conn: psycopg.Connection[Row], outcomes: Sequence[Outcome], actor: str) -> list[Recorded]:
        params = finish_params(outcomes, actor, **self._webhook)
        return [Recorded.from_row(r) for r in conn.execute(self._q["finish"], params).fetchall()]

    def extend_leases(self, ids: Sequence[str], token: str, lease_seconds: float) -> list[HeldLease]:
        """Heartbeat: push the lease deadline out; returns the leases still held."""
        if not ids:
            return []
        params = {"ids": list(ids), "token": token, "lease_seconds": lease_seconds}
        return [HeldLease.from_row(r) for r in self._all("extend_leases", params)]

    # --- sweep ---------------------------------------------------------------------

    def rescue_expired(
        self, decide: Callable[[ExpiredLease], Outcome], *, limit: int, actor: str = "sweep"
    ) -> list[Recorded]:
        """Lock tasks whose lease expired and record ``decide(lease)`` for each, in one
        transaction; concurrent sweepers skip each other's rows."""
        with self.connection() as conn, conn.transaction():
            rows = conn.execute(self._q["lock_expired_leases"], {"limit": limit}).fetchall()
            if not rows:
                return []
            return self._finish(conn, [decide(ExpiredLease.from_row(r)) for r in rows], actor)

    def promote_due(self, *, limit: int, actor: str = "sweep") -> list[ReadyTask]:
        """Due PENDING tasks (scheduled, or waiting for a retry) made QUEUED."""
        return [ReadyTask.from_row(r) for r in self._all("promote_due", {"limit": limit, "actor": actor})]

    def queued_older_than(self, seconds: float, *, limit: int) -> list[ReadyTask]:
        rows = self._all("queued_older_than", {"seconds": seconds, "limit": limit})
        return [ReadyTask.from_row(r) for r in rows]

    def live_tasks(self, status: Status, *, page_size: int = 5000) -> Iterator[list[LiveTask]]:
        """All tasks in one live status, in keyset pages."""
        after = "00000000-0000-0000-0000-000000000000"
        while True:
            rows = self._all("live_tasks_page", {"status": status.value, "after": after, "limit": page_size})
            if not rows:
                return
            page = [LiveTask.from_row(r) for r in rows]
            yield page
            after = page[-1].id

    def statuses_of(self, ids: Sequence[str]) -> list[TaskState]:
        if not ids:
            return []
        return [TaskState.from_row(r) for r in self._all("statuses_of", {"ids": list(ids)})]

    def prune_finished(self, retention_seconds: float, *, limit: int = 5000) -> int:
        """Delete COMPLETED and CANCELLED tasks finished before the retention period
        that are still in ``tasks`` (never FAILED ones: see ``purge_dead_letters``;
        archived ones go with their partition: ``drop_archive_partition``); returns
        how many."""
        row = self._one("prune_finished", {"retention_seconds": retention_seconds, "limit": limit})
        return int(row["pruned"]) if row else 0

    def ensure_event_partitions(self, days_ahead: int) -> int:
        """Create the day partitions of ``task_events`` missing from today (UTC) to
        ``days_ahead`` days ahead; returns how many were created."""
        return int(self._maintain("ensure_event_partitions", {"days_ahead": days_ahead}) or 0)

    def drop_event_partition(self, retention_seconds: float) -> str | None:
        """Drop the oldest ``task_events`` partition past retention (the events of
        tasks still present are kept); its name, or None when none is due."""
        dropped = self._maintain("drop_event_partition", {"retention_seconds": retention_seconds})
        return str(dropped) if dropped else None

    def _maintain(self, name: str, params: dict[str, Any]) -> Any:
        """One partition-maintenance function call.  Its DDL can fail in ways no
        request can (a lock timeout, a partition made by hand that overlaps): they
        become ``StoreError`` so the sweep logs the step and goes on."""
        try:
            row = self._one(name, params)
        except StoreError:
            raise
        except (psycopg.Error, ValidationError, ConflictError) as exc:
            raise StoreError(f"partition maintenance failed ({name}): {first_line(exc)}") from exc
        return next(iter(row.values())) if row else None

    def forget_idempotency_keys(self, window_seconds: float, *, limit: int = 5000) -> int:
        return self._rowcount("forget_idempotency_keys", {"window_seconds": window_seconds, "limit": limit})

    # --- cancel and dead letters -------------------------------------------------

    def cancel(self, tenant: str, task_id: str, *, actor: str = "api") -> Cancellation | None:
        """Cancel a waiting task, or request cancellation of a running one; a final
        task is left as it is.  None when the tenant has no such task.  A completion
        webhook the cancellation created is in the result, for the caller to push."""

        def work(conn: psycopg.Connection[Row]) -> Cancellation | None:
            conn.execute(self._q["lock_cancel_cascade"], {"id": task_id, "tenant": tenant})
            row = conn.execute(self._q["lock_task"], {"id": task_id, "tenant": tenant}).fetchone()
            if row is None:
                # Moved to the archive (migration 0027): final, so left as it is.
                row = conn.execute(self._q["archived_task"], {"id": task_id, "tenant": tenant}).fetchone()
                return Cancellation(Task.from_row(row), Status(row["status"]), None) if row else None
            before = Status(row["status"])
            hook = None
            if before in (Status.WAITING, Status.PENDING, Status.QUEUED):
                params = {"id": task_id, "from_status": before.value, "actor": actor, **self._webhook}
                row = conn.execute(self._q["cancel_waiting"], params).fetchone()
                if row is not None and row["hook_id"] is not None:
                    hook = WebhookHook(str(row["hook_id"]), row["hook_enqueued_ms"])
            elif before is Status.PROCESSING:
                row = conn.execute(self._q["request_cancel"], {"id": task_id}).fetchone()
            assert row is not None  # the row is locked: it cannot vanish in between
            return Cancellation(Task.from_row(row), before, hook)

        return self._transaction(work)

    def list_dead_letters(
        self, tenant: str, *, name: str | None, limit: int, after: tuple[datetime, str] | None
    ) -> list[Task]:
        params = {
            "tenant": tenant,
            "name": name,
            "limit": limit,
            "after_finished": after[0] if after else None,
            "after_id": after[1] if after else None,
        }
        return [Task.from_row(r) for r in self._all("list_dead_letters", params)]

    def redrive(
        self,
        tenant: str,
        *,
        ids: Sequence[str] | None = None,
        name: str | None = None,
        limit: int = 500,
        actor: str = "api",
        audited: bool = False,
    ) -> list[Task]:
        """FAILED -> QUEUED; ``audited`` (a bulk redrive) also writes its audit row."""
        params = {
            "tenant": tenant,
            "ids": list(ids) if ids is not None else None,
            "name": name,
            "limit": limit,
            "actor": actor,
            "audit_actor": actor if audited else None,
        }
        return [Task.from_row(r) for r in self._all("redrive", params)]

    def set_progress(self, task_id: str, token: str, progress: int, message: str | None) -> bool:
        """Progress of a running attempt; False when the lease was lost (fencing)."""
        params = {"id": task_id, "token": token, "progress": progress, "message": message}
        return self._one("set_progress", params) is not None

    # --- webhooks -----------------------------------------------------------------------

    def webhook_secret(self, tenant: str) -> str:
        """The tenant's webhook signing secret, created on first use."""
        row = self._one("webhook_secret", {"tenant": tenant, "candidate": secrets.token_urlsafe(32)})
        assert row is not None
        return str(row["webhook_secret"])

    def rotate_webhook_secret(self, tenant: str, *, actor: str) -> str:
        params = {"tenant": tenant, "candidate": secrets.token_urlsafe(32), "actor": actor}
        row = self._one("rotate_webhook_secret", params)
        assert row is not None
        return str(row["webhook_secret"])

    # --- API keys ---------------------------------------------------------------------

    def insert_api_key(self, key: NewApiKey, *, actor: str) -> ApiKeyRecord | None:
        """None when a key with that hash exists already."""
        params = {
            "actor": actor,
            "id": key.id,
            "tenant": key.tenant,
            "name": key.name,
            "key_prefix": key.key_prefix,
            "key_hash": key.key_hash,
            "rate_limit": key.rate_limit_per_minute,
            "expires_at": key.expires_at,
        }
        row = self._one("insert_api_key", params)
        return ApiKeyRecord.from_row(row) if row else None

    def api_key_by_hash(self, key_hash: str) -> StoredKey | None:
        row = self._one("api_key_by_hash", {"key_hash": key_hash})
        return StoredKey.from_row(row) if row else None

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        """Every key (of ``tenant``, when given), oldest first."""
        return [ApiKeyRecord.from_row(r) for r in self._all("list_api_keys", {"tenant": tenant})]

    def revoke_api_key(self, ref: str, *, actor: str) -> ApiKeyRecord | None:
        """Disable the key whose id or display prefix is ``ref``; None when there is none."""
        row = self._one("revoke_api_key", {"ref": ref, "actor": actor})
        return ApiKeyRecord.from_row(row) if row else None

    # --- observability: metrics, stats, health ---------------------------------------

    def metric_totals(self) -> list[MetricTotal]:
        """The counters and histogram buckets the trigger of migration 0003 keeps."""
        return [MetricTotal.from_row(r) for r in self._all("metric_totals", {})]

    def fold_metric_deltas(self) -> bool:
        """Fold the trigger's append-only deltas into the totals (keeps reads cheap).
        False when another process is folding right now (it does the work)."""
        with self.connection() as conn, conn.transaction():
            row = conn.execute(self._q["try_fold_lock"]).fetchone()
            if not row or not row["locked"]:
                return False
            conn.execute(self._q["fold_metric_deltas"])
            return True

    def queue_gauges(self) -> list[QueueGauge]:
        """Task counts for the live states and FAILED."""
        return [QueueGauge.from_row(r) for r in self._all("queue_gauges", {})]

    def schema_version(self) -> int:
        """The newest applied migration; doubles as the health check's ping."""
        try:
            row = self._one("schema_version", {})
        except psycopg.errors.UndefinedTable:
            return 0  # never migrated
        return int(row["version"]) if row else 0

    def tenant_stats(self, tenant: str) -> StatsSnapshot:
        """A tenant's numbers in one snapshot: the database's clock, the live tasks
        (waiting/running/dead-lettered by name and priority), those submitted and
        finished since the start of the day (UTC) and per minute for the last hour."""
        with self.connection() as conn, snapshot(conn):
            row = conn.execute(self._q["stats_clock"]).fetchone()
            assert row is not None
            clock = StatsClock.from_row(row)
            today = {"tenant": tenant, "since": clock.today}
            per_minute = {"tenant": tenant, "since": clock.hour_start}
            return StatsSnapshot(
                clock=clock,
                live=[LiveCount.from_row(r) for r in conn.execute(self._q["stats_live"], {"tenant": tenant})],
                submitted=[SubmittedCount.from_row(r) for r in conn.execute(self._q["stats_submitted_since"], today)],
                finished=[FinishedCount.from_row(r) for r in conn.execute(self._q["stats_finished_since"], today)],
                per_minute=[MinuteCount.from_row(r) for r in conn.execute(self._q["stats_per_minute"], per_minute)],
            )
