"""The part of the client that does no I/O, shared by :class:`Client` and
:class:`AsyncClient`.

Every operation is a *plan*: a generator that yields :class:`Send` (an HTTP request
to make) or :class:`Sleep` (a pause) and receives the ``httpx.Response`` of each
``Send`` (or has the transport's exception thrown into it).  The plan builds the
requests, decides on retries and backoff, and parses the answers; the sync and async
clients only run plans (``httpx.Client.send`` / ``time.sleep`` versus ``await
httpx.AsyncClient.send`` / ``asyncio.sleep``), so both behave identically.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from tasklane_client import _answers as answers
from tasklane_client._requests import (
    _batch_body,
    _enum_value,
    _iso,
    _params,
    _seg,
    error_from_response,
    new_idempotency_key,
)
from tasklane_client.errors import (
    NetworkError,
    TaskCancelledError,
    TaskFailedError,
    WaitTimeoutError,
    parse_retry_after,
)
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
    task_body,
)
from tasklane_client.workflows import Workflow

__version__ = "0.1.0"

T = TypeVar("T")

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Send:
    """Make this HTTP request (the same bytes on every attempt of a call)."""

    method: str
    url: str
    params: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    """Pause for ``seconds`` before the plan goes on."""

    seconds: float


Action = Send | Sleep
Plan = Generator[Action, httpx.Response | None, T]


@dataclass(frozen=True)
class RetryConfig:
    """When and how long to wait before retrying.

    ``max_retries`` retries (so ``max_retries + 1`` attempts) after a connection error,
    a timeout, a 503 or a 429; waits ``backoff_base * 2**n`` seconds (capped at
    ``backoff_max``, shortened by up to ``jitter``), or what a ``Retry-After`` header
    says.  A ``Retry-After`` longer than ``max_retry_after`` is not waited for: the
    :class:`~tasklane_client.errors.RateLimitedError` is raised at once.
    """

    max_retries: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    max_retry_after: float = 60.0
    jitter: float = 0.25

    def backoff(self, retry: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2.0**retry)
        return delay * (1 - self.jitter * random.random())


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its successful answer.

    ``replay_safe`` says whether sending it twice is harmless: reads, submits (they
    carry an idempotency key) and PATCH are; cancel, redrive, create and delete are
    not, so they are retried only when the request surely did not reach the server
    (connection refused, 503, 429)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] | None = None
    body: Any = None
    has_body: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    replay_safe: bool = True


# Transport errors after which the request surely never reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _OutOfTime(Exception):
    """A retry would start past the caller's deadline (``exchange``)."""


# Transport errors after which it may have: retried only for replay-safe calls.
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class Core:
    """Builds every call, runs the retry policy and parses answers; no I/O."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        retry: RetryConfig,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required, e.g. http://127.0.0.1:8000")
        if not api_key:
            raise ValueError("api_key is required")
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.headers = {
            "X-API-Key": api_key,
            "Accept": "application/json",
            "User-Agent": f"tasklane-client/{__version__} httpx/{httpx.__version__}",
            **(headers or {}),
        }

    # --- the exchange: one call, with retries -------------------------------------

    def send_action(self, call: Call[Any]) -> Send:
        headers = {**self.headers, **call.headers}
        content = None
        if call.has_body:
            content = json.dumps(call.body, separators=(",", ":"), allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        return Send(call.method, self.base_url + call.path, call.params or None, content, headers)

    def delay_after_error(self, call: Call[Any], exc: Exception, retry: int) -> float | None:
        """Seconds to wait before retrying after a transport error, or None to give up."""
        if retry >= self.retry.max_retries:
            return None
        if isinstance(exc, _NOT_SENT) or (call.replay_safe and isinstance(exc, _MAYBE_SENT)):
            return self.retry.backoff(retry)
        return None

    def delay_after_response(self, call: Call[Any], response: httpx.Response, retry: int) -> float | None:
        """Seconds to wait before retrying after this answer, or None to keep it."""
        status = response.status_code
        retryable = status in (429, 503) or (call.replay_safe and status in (502, 504))
        if not retryable or retry >= self.retry.max_retries:
            return None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is None:
            return self.retry.backoff(retry)
        if retry_after > self.retry.max_retry_after:
            return None  # longer than we agreed to wait: hand the 429/503 to the caller
        return retry_after

    def exchange(self, call: Call[T], deadline: float | None = None) -> Plan[T]:
        """Send ``call`` (the same request every attempt), retrying as configured, and
        return its parsed answer or raise the typed error; ``_OutOfTime`` instead of a
        retry that would start after ``deadline`` (``time.monotonic``)."""
        send = self.send_action(call)
        retry = 0
        while True:
            try:
                response = yield send
            except httpx.TransportError as exc:
                delay = self.delay_after_error(call, exc, retry)
                if delay is None:
                    tries = retry + 1
                    raise NetworkError(
                        f"{call.method} {call.path} failed after {tries} attempt(s): {type(exc).__name__}: {exc}"
                    ) from exc
            else:
                assert response is not None
                delay = self.delay_after_response(call, response, retry)
                if delay is None:
                    if response.is_success:
                        return call.parse(response)
                    raise error_from_response(response)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise _OutOfTime
            yield Sleep(delay)
            retry += 1

    # --- tasks -------------------------------------------------------------------

    def submit(
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
    ) -> Plan[Task]:
        body = task_body(
            name,
            payload,
            priority=priority,
            run_at=run_at,
            delay_seconds=delay_seconds,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            callback_url=callback_url,
            unique_key=unique_key,
            unique_for_seconds=unique_for_seconds,
            expires_at=expires_at,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
        )
        key = idempotency_key or new_idempotency_key()
        return self.exchange(
            Call("POST", "/api/v1/tasks", answers.task, body=body, has_body=True, headers={IDEMPOTENCY_HEADER: key})
        )

    def submit_many(
        self,
        tasks: Iterable[NewTask | Mapping[str, Any]],
        *,
        atomic: bool = False,
        batch: Mapping[str, Any] | None = None,
    ) -> Plan[BatchResult]:
        items: list[dict[str, Any]] = []
        for task in tasks:
            item = task.to_body() if isinstance(task, NewTask) else dict(task)
            if "name" not in item:
                raise ValueError(f"task {len(items)} has no name")
            if item.get("idempotency_key") is None:
                item["idempotency_key"] = new_idempotency_key()
            items.append(item)
        if not items:
            raise ValueError("submit_many needs at least one task")
        body: dict[str, Any] = {"tasks": items, "atomic": atomic}
        if batch is not None:
            body["batch"] = _batch_body(batch)
        return self.exchange(Call("POST", "/api/v1/tasks/batch", answers.batch, body=body, has_body=True))

    def batches_page(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Plan[Page[Batch]]:
        params = _params(status=status, limit=limit, cursor=cursor)
        return self.exchange(Call("GET", "/api/v1/batches", answers.batch_page, params=params))

    def get_batch(self, batch_id: str) -> Plan[Batch]:
        return self.exchange(Call("GET", f"/api/v1/batches/{_seg(batch_id)}", answers.batch_info))

    def get_call(self, task_id: str) -> Call[Task]:
        return Call("GET", f"/api/v1/tasks/{_seg(task_id)}", answers.task)

    def submit_workflow(self, steps: Mapping[str, Mapping[str, Any]]) -> Plan[Workflow]:
        # Not replay-safe: a retried POST would create a second workflow.
        body = {"steps": dict(steps)}
        return self.exchange(
            Call("POST", "/api/v1/workflows", answers.workflow, body=body, has_body=True, replay_safe=False)
        )

    def get_workflow(self, workflow_id: str) -> Plan[Workflow]:
        return self.exchange(Call("GET", f"/api/v1/workflows/{_seg(workflow_id)}", answers.workflow))

    def get(self, task_id: str) -> Plan[Task]:
        return self.exchange(self.get_call(task_id))

    def events(self, task_id: str) -> Plan[list[TaskEvent]]:
        return self.exchange(Call("GET", f"/api/v1/tasks/{_seg(task_id)}/events", answers.events))

    def cancel(self, task_id: str) -> Plan[Task]:
        return self.exchange(Call("POST", f"/api/v1/tasks/{_seg(task_id)}/cancel", answers.task, replay_safe=False))

    def cancel_many(
        self,
        *,
        status: TaskStatus | str | None = None,
        name: str | None = None,
        priority: Priority | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
    ) -> Plan[BulkCancelResult]:
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = _enum_value(status)
        if name is not None:
            body["name"] = name
        if priority is not None:
            body["priority"] = _enum_value(priority)
        if created_before is not None:
            body["created_before"] = _iso(created_before)
        if not body:
            raise ValueError("give status, name, priority or created_before to choose which tasks to cancel")
        if limit is not None:
            body["limit"] = limit
        return self.exchange(
            Call(
                "POST",
                "/api/v1/tasks/cancel",
                lambda r: BulkCancelResult.from_dict(r.json()),
                body=body,
                has_body=True,
                replay_safe=False,
            )
        )

    def set_paused(self, name: str, paused: bool) -> Plan[TypePause]:
        action = "pause" if paused else "resume"
        # Both are idempotent: sending one twice leaves the same state.
        return self.exchange(
            Call("POST", f"/api/v1/task-types/{_seg(name)}/{action}", lambda r: TypePause.from_dict(r.json()))
        )

    def list_page(
        self,
        *,
        status: TaskStatus | str | None = None,
        name: str | None = None,
        priority: Priority | str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Plan[Page[Task]]:
        params = _params(
            status=_enum_value(status),
            name=name,
            priority=_enum_value(priority),
            created_after=_iso(created_after),
            created_before=_iso(created_before),
            limit=limit,
            cursor=cursor,
        )
        return self.exchange(Call("GET", "/api/v1/tasks", answers.task_page, params=params))

    def wait_task(
        self,
        task_id: str,
        timeout: float | None,
        poll_interval: float,
        max_poll_interval: float,
    ) -> Plan[Task]:
        """Poll until the task is final; raise WaitTimeoutError after ``timeout`` s."""
        start = time.monotonic()
        interval = poll_interval
        call = self.get_call(task_id)
        # Once a state was seen, a poll's retries (a 429's Retry-After, a network error's
        # backoff) end at the timeout too: WaitTimeoutError, not minutes later.
        deadline = None if timeout is None else start + timeout
        task: Task | None = None
        while True:
            try:
                task = yield from self.exchange(call, deadline if task is not None else None)
            except _OutOfTime:
                assert task is not None and timeout is not None
                raise WaitTimeoutError(task, timeout) from None
            if task.is_final:
                return task
            elapsed = time.monotonic() - start
            if timeout is not None and elapsed >= timeout:
                raise WaitTimeoutError(task, timeout)
            yield Sleep(interval if timeout is None else min(interval, timeout - elapsed))
            interval = min(interval * 1.5, max_poll_interval)

    def wait(
        self,
        task_id: str,
        timeout: float | None,
        poll_interval: float,
        max_poll_interval: float,
    ) -> Plan[Any]:
        """The task's result once COMPLETED; its error once FAILED or CANCELLED."""
        task = yield from self.wait_task(task_id, timeout, poll_interval, max_poll_interval)
        return task_outcome(task)

    # --- dead letters -------------------------------------------------------------

    def dead_letters_page(
        self, *, name: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Plan[Page[Task]]:
        params = _params(name=name, limit=limit, cursor=cursor)
        return self.exchange(Call("GET", "/api/v1/dead-letters", answers.task_page, params=params))

    def redrive(self, task_id: str) -> Plan[Task]:
        path = f"/api/v1/dead-letters/{_seg(task_id)}/redrive"
        return self.exchange(Call("POST", path, answers.task, replay_safe=False))

    def redrive_many(
        self, *, ids: Iterable[str] | None = None, name: str | None = None, limit: int | None = None
    ) -> Plan[RedriveResult]:
        body: dict[str, Any] = {}
        if ids is not None:
            body["ids"] = list(ids)
        if name is not None:
            body["name"] = name
        if limit is not None:
            body["limit"] = limit
        if not body.get("ids") and name is None:
            raise ValueError("give ids or name to choose which dead letters to redrive")

        def parse(response: httpx.Response) -> RedriveResult:
            data = response.json()
            return RedriveResult(int(data["redriven"]), [str(i) for i in data.get("ids", [])])

        return self.exchange(
            Call("POST", "/api/v1/dead-letters/redrive", parse, body=body, has_body=True, replay_safe=False)
        )

    def purge_dead_letters(
        self,
        *,
        ids: Iterable[str] | None = None,
        name: str | None = None,
        failed_before: datetime | str | None = None,
        limit: int | None = None,
    ) -> Plan[PurgeResult]:
        body: dict[str, Any] = {}
        if ids is not None:
            body["ids"] = list(ids)
        if name is not None:
            body["name"] = name
        if failed_before is not None:
            body["failed_before"] = _iso(failed_before)
        if limit is not None:
            body["limit"] = limit
        if not body.get("ids") and name is None and failed_before is None:
            raise ValueError("give ids, name or failed_before to choose which dead letters to purge")
        # Replaying a purge is harmless (what it deleted is gone), but it is not retried
        # after it may have reached the server: the caller learns what this call did.
        return self.exchange(
            Call(
                "POST",
                "/api/v1/dead-letters/purge",
                lambda r: PurgeResult.from_dict(r.json()),
                body=body,
                has_body=True,
                replay_safe=False,
            )
        )

    # --- the audit log ------------------------------------------------------------

    def audit_page(
        self, *, action: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Plan[Page[AuditEntry]]:
        params = _params(action=action, limit=limit, cursor=cursor)
        return self.exchange(Call("GET", "/api/v1/audit", answers.audit_page, params=params))

    # --- schedules ----------------------------------------------------------------

    def create_schedule(
        self,
        name: str,
        cron: str,
        task: ScheduleTask | Mapping[str, Any],
        *,
        timezone: str | None = None,
        enabled: bool | None = None,
        catch_up: str | None = None,
    ) -> Plan[Schedule]:
        body = _schedule_body(name=name, cron=cron, task=task, timezone=timezone, enabled=enabled, catch_up=catch_up)
        return self.exchange(
            Call("POST", "/api/v1/schedules", answers.schedule, body=body, has_body=True, replay_safe=False)
        )

    def list_schedules(self) -> Plan[list[Schedule]]:
        return self.exchange(Call("GET", "/api/v1/schedules", answers.schedules))

    def get_schedule(self, schedule_id: str) -> Plan[Schedule]:
        return self.exchange(Call("GET", f"/api/v1/schedules/{_seg(schedule_id)}", answers.schedule))

    def update_schedule(
        self,
        schedule_id: str,
        *,
        name: str | None = None,
        cron: str | None = None,
        task: ScheduleTask | Mapping[str, Any] | None = None,
        timezone: str | None = None,
        enabled: bool | None = None,
        catch_up: str | None = None,
    ) -> Plan[Schedule]:
        body = _schedule_body(name=name, cron=cron, task=task, timezone=timezone, enabled=enabled, catch_up=catch_up)
        if not body:
            raise ValueError("update_schedule needs at least one field to change")
        path = f"/api/v1/schedules/{_seg(schedule_id)}"
        return self.exchange(Call("PATCH", path, answers.schedule, body=body, has_body=True))

    def delete_schedule(self, schedule_id: str) -> Plan[None]:
        path = f"/api/v1/schedules/{_seg(schedule_id)}"
        return self.exchange(Call("DELETE", path, answers.none, replay_safe=False))

    # --- webhook secret and stats -------------------------------------------------

    def webhook_secret(self) -> Plan[WebhookSecret]:
        return self.exchange(Call("GET", "/api/v1/webhook-secret", lambda r: WebhookSecret.from_dict(r.json())))

    def rotate_webhook_secret(self) -> Plan[WebhookSecret]:
        return self.exchange(
            Call(
                "POST",
                "/api/v1/webhook-secret/rotate",
                lambda r: WebhookSecret.from_dict(r.json()),
                replay_safe=False,
            )
        )

    def stats(self) -> Plan[Stats]:
        return self.exchange(Call("GET", "/api/v1/stats", lambda r: Stats.from_dict(r.json())))


def _schedule_body(
    *,
    name: str | None,
    cron: str | None,
    task: ScheduleTask | Mapping[str, Any] | None,
    timezone: str | None,
    enabled: bool | None,
    catch_up: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if cron is not None:
        body["cron"] = cron
    if timezone is not None:
        body["timezone"] = timezone
    if task is not None:
        body["task"] = task.to_body() if isinstance(task, ScheduleTask) else dict(task)
    if enabled is not None:
        body["enabled"] = enabled
    if catch_up is not None:
        body["catch_up"] = catch_up
    return body


def task_outcome(task: Task) -> Any:
    """A final task's result, or its error raised."""
    if task.status is TaskStatus.COMPLETED:
        return task.result
    if task.status is TaskStatus.FAILED:
        raise TaskFailedError(task)
    if task.status is TaskStatus.CANCELLED:
        raise TaskCancelledError(task)
    raise ValueError(f"task {task.id} is {task.status.value}, not final")
