"""The asyncio client: runs the shared plans over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx

from tasklane_client._core import Core, Plan, RetryConfig, Sleep
from tasklane_client.models import (
    AuditEntry,
    Batch,
    BatchResult,
    BulkCancelResult,
    NewTask,
    Page,
    Priority,
    PurgeResult,
    RedriveResult,
    Schedule,
    ScheduleTask,
    Stats,
    Task,
    TaskEvent,
    TaskStatus,
    TypePause,
    WebhookSecret,
)
from tasklane_client.workflows import Workflow

T = TypeVar("T")


class AsyncClient:
    """An asyncio Tasklane API client with the same methods as :class:`Client`
    (awaitable; ``list`` and ``dead_letters`` are async iterators).

    ``AsyncClient("http://127.0.0.1:8000", api_key)``; use it as ``async with`` or
    await :meth:`aclose`.  Network errors, timeouts, 503s and 429s are retried up to
    ``max_retries`` times with exponential backoff (``backoff_base * 2**n``, capped at
    ``backoff_max``, jittered); a 429's ``Retry-After`` is honoured when it is at most
    ``max_retry_after`` seconds.  Submits carry an idempotency key, so a retried
    submit never creates a second task.  Calls that are not safe to replay (cancel,
    redrive, create/delete schedule, rotate) are retried only when the request surely
    did not reach the server.  ``transport`` or ``http_client`` replace the HTTP layer
    (tests, proxies, custom TLS).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = 10.0,
        max_retries: int = 3,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        retry = RetryConfig(
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
        )
        self._core = Core(base_url, api_key, retry, headers)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout, transport=transport)
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    # --- lifecycle -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool (unless it was passed in as ``http_client``)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, plan: Plan[T]) -> T:
        reply: httpx.Response | None = None
        error: Exception | None = None
        while True:
            try:
                action = plan.throw(error) if error is not None else plan.send(reply)
            except StopIteration as stop:
                return cast(T, stop.value)
            reply, error = None, None
            if isinstance(action, Sleep):
                await self._sleep(action.seconds)
                continue
            request = self._http.build_request(
                action.method, action.url, params=action.params, content=action.content, headers=action.headers
            )
            try:
                reply = await self._http.send(request)
            except httpx.TransportError as exc:
                error = exc

    # --- tasks ---------------------------------------------------------------------

    async def submit(
        self,
        name: str,
        payload: Any = None,
        *,
        priority: str | Priority | None = None,
        run_at: datetime | str | None = None,
        delay_seconds: float | None = None,
        max_retries: int | None = None,
        timeout_seconds: int | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        unique_key: str | None = None,
        unique_for_seconds: float | None = None,
        expires_at: datetime | str | None = None,
        depends_on: Sequence[str] | None = None,
        on_dependency_failure: str | None = None,
    ) -> Task:
        """Submit one task and return it (``QUEUED``, or ``PENDING`` when delayed;
        ``WAITING`` with ``depends_on``: ids of tasks it waits for, and
        ``on_dependency_failure`` "run" to run even when one of them fails).

        Options left as None take the server's defaults.  Without ``idempotency_key``
        a fresh uuid4 is used, so retries of this call are safe; pass your own to make
        *your* retries safe too (the same key and body return the original task with
        ``replayed=True``; the same key with another body raises ConflictError).
        ``unique_key`` (held while the task is active, or ``unique_for_seconds``):
        when another task holds it, that task comes back with ``duplicate=True``.
        ``expires_at``: no attempt starts after it (the task expires, CANCELLED).
        """
        return await self._run(
            self._core.submit(
                name,
                payload,
                priority=priority,
                run_at=run_at,
                delay_seconds=delay_seconds,
                max_retries=max_retries,
                timeout_seconds=timeout_seconds,
                idempotency_key=idempotency_key,
                callback_url=callback_url,
                unique_key=unique_key,
                unique_for_seconds=unique_for_seconds,
                expires_at=expires_at,
                depends_on=depends_on,
                on_dependency_failure=on_dependency_failure,
            )
        )

    async def submit_many(
        self,
        tasks: Iterable[NewTask | Mapping[str, Any]],
        *,
        atomic: bool = False,
        batch: Mapping[str, Any] | None = None,
    ) -> BatchResult:
        """Submit up to 500 tasks in one request (:class:`NewTask` or mappings with the
        submit fields).  Each item without an ``idempotency_key`` gets a uuid4 one.
        Invalid items come back as errors in ``results`` and the rest are accepted;
        with ``atomic=True`` any invalid item raises ValidationError and nothing is
        accepted.  ``batch`` (``{"callback_url": ..., "on_complete": NewTask(...)}``,
        or ``{}``) opens a batch of the tasks created: ``BatchResult.batch_id``, read
        with :meth:`get_batch`; it fires its callback once all of them are final."""
        return await self._run(self._core.submit_many(tasks, atomic=atomic, batch=batch))

    async def batches_page(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Batch]:
        """One page of the tenant's batches, newest first (``status``: OPEN or COMPLETED)."""
        return await self._run(self._core.batches_page(status=status, limit=limit, cursor=cursor))

    async def get_batch(self, batch_id: str) -> Batch:
        """A batch's counts by state, progress and completion."""
        return await self._run(self._core.get_batch(batch_id))

    async def submit_workflow(self, steps: Mapping[str, Mapping[str, Any]]) -> Workflow:
        """Submit a workflow: ``{name: task body plus "after": [step names]}``; steps
        without ``after`` start at once, the others when their parents completed."""
        return await self._run(self._core.submit_workflow(steps))

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """The workflow: its status and every step's task."""
        return await self._run(self._core.get_workflow(workflow_id))

    async def get(self, task_id: str) -> Task:
        """The task, with ``errors`` (every failed attempt) and ``progress``."""
        return await self._run(self._core.get(task_id))

    async def events(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's audit trail, oldest first."""
        return await self._run(self._core.events(task_id))

    async def wait(
        self,
        task_id: str,
        timeout: float | None = 60.0,
        *,
        poll_interval: float = 0.1,
        max_poll_interval: float = 2.0,
    ) -> Any:
        """Wait for the task to finish and return its result.

        Raises TaskFailedError (FAILED: its last error and type), TaskCancelledError,
        or WaitTimeoutError (a ``TimeoutError``) when it is not final after
        ``timeout`` seconds (None waits forever).  Polls from ``poll_interval``,
        growing to ``max_poll_interval``."""
        return await self._run(self._core.wait(task_id, timeout, poll_interval, max_poll_interval))

    async def wait_task(
        self,
        task_id: str,
        timeout: float | None = 60.0,
        *,
        poll_interval: float = 0.1,
        max_poll_interval: float = 2.0,
    ) -> Task:
        """Like :meth:`wait` but return the final :class:`Task` whatever its status."""
        return await self._run(self._core.wait_task(task_id, timeout, poll_interval, max_poll_interval))

    async def cancel(self, task_id: str) -> Task:
        """Cancel a task: PENDING/QUEUED become CANCELLED; a PROCESSING task gets
        ``cancel_requested`` (honoured at its next checkpoint); a final task raises
        ConflictError."""
        return await self._run(self._core.cancel(task_id))

    async def cancel_many(
        self,
        *,
        status: TaskStatus | str | None = None,
        name: str | None = None,
        priority: Priority | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
    ) -> BulkCancelResult:
        """Cancel the live tasks matching every filter given (at least one), oldest first,
        at most 500 a call, by the rules of ``cancel``; ``more`` says whether to call again."""
        return await self._run(
            self._core.cancel_many(
                status=status, name=name, priority=priority, created_before=created_before, limit=limit
            )
        )

    async def pause_task_type(self, name: str) -> TypePause:
        """Pause a task type for the key's tenant: none of its tasks starts until resumed."""
        return await self._run(self._core.set_paused(name, True))

    async def resume_task_type(self, name: str) -> TypePause:
        """Resume a task type the tenant paused; its waiting tasks go back to the queue."""
        return await self._run(self._core.set_paused(name, False))

    async def list_page(
        self,
        *,
        status: TaskStatus | str | None = None,
        name: str | None = None,
        priority: Priority | str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Task]:
        """One page of tasks, newest first (``limit`` 1 to 500, server default 50)."""
        return await self._run(
            self._core.list_page(
                status=status,
                name=name,
                priority=priority,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
        )

    async def list(
        self,
        *,
        status: TaskStatus | str | None = None,
        name: str | None = None,
        priority: Priority | str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Task]:
        """Every matching task, newest first, fetched page by page (``page_size`` per
        request) following ``next_cursor``; stable under concurrent inserts."""
        cursor: str | None = None
        while True:
            page = await self.list_page(
                status=status,
                name=name,
                priority=priority,
                created_after=created_after,
                created_before=created_before,
                limit=page_size,
                cursor=cursor,
            )
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # --- dead letters ----------------------------------------------------------------

    async def dead_letters_page(
        self, *, name: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Task]:
        """One page of FAILED tasks, newest first."""
        return await self._run(self._core.dead_letters_page(name=name, limit=limit, cursor=cursor))

    async def dead_letters(self, *, name: str | None = None, page_size: int | None = None) -> AsyncIterator[Task]:
        """Every FAILED task (optionally of one ``name``), following cursors."""
        cursor: str | None = None
        while True:
            page = await self.dead_letters_page(name=name, limit=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def redrive(self, task_id: str) -> Task:
        """Move one FAILED task back to QUEUED with a fresh attempt budget (ConflictError
        when it is not FAILED)."""
        return await self._run(self._core.redrive(task_id))

    async def redrive_many(
        self, *, ids: Iterable[str] | None = None, name: str | None = None, limit: int | None = None
    ) -> RedriveResult:
        """Redrive dead letters by ``ids`` and/or task ``name`` (at most 500 a call)."""
        return await self._run(self._core.redrive_many(ids=ids, name=name, limit=limit))

    async def purge_dead_letters(
        self,
        *,
        ids: Iterable[str] | None = None,
        name: str | None = None,
        failed_before: datetime | str | None = None,
        limit: int | None = None,
    ) -> PurgeResult:
        """Delete dead letters for good: those matching every filter given (``ids``, task
        ``name``, failed before ``failed_before``), at most 500 a call; ``more`` says
        whether more match.  Audited under the key's id."""
        return await self._run(
            self._core.purge_dead_letters(ids=ids, name=name, failed_before=failed_before, limit=limit)
        )

    # --- the audit log -----------------------------------------------------------------

    async def audit_page(
        self, *, action: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[AuditEntry]:
        """One page of the tenant's audit log, newest first (of one ``action`` if given)."""
        return await self._run(self._core.audit_page(action=action, limit=limit, cursor=cursor))

    async def audit(self, *, action: str | None = None, page_size: int | None = None) -> AsyncIterator[AuditEntry]:
        """Every entry of the tenant's audit log, newest first, following cursors."""
        cursor: str | None = None
        while True:
            page = await self.audit_page(action=action, limit=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # --- schedules ---------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        cron: str,
        task: ScheduleTask | Mapping[str, Any],
        *,
        timezone: str | None = None,
        enabled: bool | None = None,
        catch_up: str | None = None,
    ) -> Schedule:
        """Create a cron schedule (5 fields, or 6 with seconds last) evaluated in the IANA
        ``timezone`` (server default UTC); ``catch_up`` is ``"once"`` or ``"skip"``."""
        return await self._run(
            self._core.create_schedule(name, cron, task, timezone=timezone, enabled=enabled, catch_up=catch_up)
        )

    async def list_schedules(self) -> builtins.list[Schedule]:
        """Every schedule of the tenant."""
        return await self._run(self._core.list_schedules())

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """A schedule with its next five fire times and recent runs."""
        return await self._run(self._core.get_schedule(schedule_id))

    async def update_schedule(
        self,
        schedule_id: str,
        *,
        name: str | None = None,
        cron: str | None = None,
        task: ScheduleTask | Mapping[str, Any] | None = None,
        timezone: str | None = None,
        enabled: bool | None = None,
        catch_up: str | None = None,
    ) -> Schedule:
        """Change the given fields (``enabled=False`` pauses); others keep their value."""
        return await self._run(
            self._core.update_schedule(
                schedule_id, name=name, cron=cron, task=task, timezone=timezone, enabled=enabled, catch_up=catch_up
            )
        )

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (tasks it already created stay)."""
        await self._run(self._core.delete_schedule(schedule_id))

    # --- webhook secret and stats ---------------------------------------------------------

    async def webhook_secret(self) -> WebhookSecret:
        """The tenant's webhook signing secret (for :func:`verify_webhook`)."""
        return await self._run(self._core.webhook_secret())

    async def rotate_webhook_secret(self) -> WebhookSecret:
        """Replace the webhook secret and return the new one."""
        return await self._run(self._core.rotate_webhook_secret())

    async def stats(self) -> Stats:
        """The tenant in numbers: today's totals, by priority and name, per minute."""
        return await self._run(self._core.stats())
