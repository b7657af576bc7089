"""What the AWS-backed executors share: settings, idempotency, error classification.

Idempotency (Powertools' idempotency utility on Redis, ``CachePersistenceLayer``)
------------------------------------------------------------------------------
Delivery is at least once, so an executor with a side effect (an email, an SMS,
an HTTP call) must not repeat it when the *same work* is delivered twice.  The
record is keyed on the **task id alone** (not the attempt), and Powertools keeps
it only for executions that **succeeded**:

- attempt 1 raised (SES throttled us, a 503, a timeout inside the call): the
  record is deleted, so attempt 2 runs again: a retried failure is retried;
- attempt 1 succeeded (SES accepted the message) but its outcome never reached
  PostgreSQL (the drainer died, lost its lease, PostgreSQL blinked): the sweeper
  counts the attempt as failed and attempt 2 is delivered; it finds the
  COMPLETED record and returns the stored result *without sending again*;
- attempt 1 is still running when attempt 2 arrives (a stalled worker whose lease
  was taken over): attempt 2 sees INPROGRESS and fails retryably, and tries again
  after backoff.  The in-progress lock expires with the attempt's own timeout, so
  an attempt killed mid-call does not block its successors for longer than that
  (whether that attempt's side effect happened is then unknowable: at least once).

Keying on ``(task id, attempt)`` instead would make every redelivery a new key and
send the email twice in the second case, which is the one that matters.
Records live ``TASKLANE_EXECUTOR_IDEMPOTENCY_HOURS`` (default 24 h).

Heavy imports (boto3, Powertools' idempotency, fpdf2, urllib3) happen inside the
functions, so registering these executors costs the cold start nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from chalicelib.adapters.redis.keys import Keys
from chalicelib.config import Settings
from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.tasktypes.catalog import require
from chalicelib.tasktypes.context import TaskContext

T = TypeVar("T")

_lock = threading.Lock()
_stores: dict[tuple[str, str, int], Any] = {}
_redis_clients: dict[tuple[str, bool], Any] = {}

# Reserved payload keys: anything starting with "_" is accepted and ignored, except
# "_fault", honoured only when TASKLANE_FAULT_INJECTION=1 (tests of the delivery
# guarantee; never set it in production).
FAULT_KEY = "_fault"
FAULTS = ("fail-after-side-effect", "crash-after-side-effect")


def settings_of(ctx: TaskContext) -> Settings:
    """The drainer's settings when it lent them, else the process's."""
    return ctx.ports.settings_or_env()


def _redis_client(ctx: TaskContext, settings: Settings) -> Any:
    if ctx.ports.idempotency_redis is not None:
        return ctx.ports.idempotency_redis
    with _lock:
        where = (settings.redis_url, settings.redis_cluster)
        found = _redis_clients.get(where)
        if found is None:
            from chalicelib.adapters.redis.client import connect

            found = _redis_clients[where] = connect(settings.redis_url, cluster=settings.redis_cluster)
        return found


def _persistence_store(task_name: str, settings: Settings, client: Any) -> Any:
    # One layer per task name: Powertools keeps the key prefix on the layer, and the
    # executor threads of different task types must not share (and race on) it.
    key = (task_name, settings.redis_prefix, id(client))
    with _lock:
        store = _stores.get(key)
        if store is None:
            from aws_lambda_powertools.utilities.idempotency.persistence.cache import CachePersistenceLayer

            store = _stores[key] = CachePersistenceLayer(client=client)
        return store


class _AttemptClock:
    """Lambda-context stand-in so Powertools expires the in-progress lock with the attempt."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx

    def get_remaining_time_in_millis(self) -> int:
        return max(int(self.ctx.remaining_seconds() * 1000), 1000)


def once_per_task(task_name: str, ctx: TaskContext, payload: dict[str, Any], work: Callable[[], T]) -> T:
    """Run ``work()`` at most once successfully per task id (see the module docstring).

    ``payload`` is only read for the test-only ``_fault`` flag."""
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
    )

    from chalicelib.observability.log import logger

    settings = settings_of(ctx)
    store = _persistence_store(task_name, settings, _redis_client(ctx, settings))
    replayed: list[bool] = []

    def on_replay(response: Any, record: Any) -> Any:
        replayed.append(True)
        return response

    config = IdempotencyConfig(
        event_key_jmespath="task_id",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=int(settings.executor_idempotency_hours * 3600),
        lambda_context=_AttemptClock(ctx),  # type: ignore[arg-type]
        response_hook=on_replay,  # type: ignore[arg-type]
    )

    @idempotent_function(  # type: ignore[untyped-decorator]
        data_keyword_argument="task",
        persistence_store=store,
        config=config,
        key_prefix=Keys(settings.redis_prefix).idempotency_prefix(task_name),
    )
    def run(task: dict[str, Any]) -> T:
        return work()

    try:
        result: T = run(task={"task_id": ctx.task_id})
    except IdempotencyAlreadyInProgressError as exc:
        raise RetryableError(f"another attempt of task {ctx.task_id} is still running: {exc}") from exc
    except IdempotencyPersistenceLayerError as exc:
        raise RetryableError(f"idempotency store unavailable: {exc}") from exc
    if replayed:
        logger.info(
            "side effect already done by an earlier attempt; returning its result",
            extra={"task_id": ctx.task_id, "task_name": task_name, "attempt": ctx.attempt},
        )
    _maybe_inject_fault(task_name, ctx, settings, payload.get(FAULT_KEY))
    return result


def _maybe_inject_fault(task_name: str, ctx: TaskContext, settings: Settings, fault: Any) -> None:
    if not settings.fault_injection or fault not in FAULTS or ctx.attempt != 1:
        return
    if fault == "crash-after-side-effect":
        os._exit(137)  # as if the drainer were killed: the lease expires, the sweeper retries
    raise RetryableError(f"injected fault after the side effect of {task_name} (attempt 1)")


def check_keys(payload: Any, allowed: set[str], task_name: str) -> None:
    """The payload is an object whose keys are ``allowed`` or reserved (``_`` prefix)."""
    require(isinstance(payload, dict), f"{task_name} needs an object payload")
    unknown = sorted(k for k in payload if k not in allowed and not k.startswith("_"))
    require(not unknown, f"{task_name}: unknown payload field(s): {', '.join(unknown)}")


def classify_aws_error(exc: BaseException, what: str) -> Exception:
    """Map a botocore error to Retryable (throttling, 5xx, network) or Permanent (4xx)."""
    from botocore.exceptions import (  # type: ignore[import-untyped]
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{what}: {code}: {error.get('Message', '')}"
        retryable_codes = {
            "Throttling",
            "ThrottlingException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
            "ServiceUnavailable",
            "InternalFailure",
            "InternalError",
            "SlowDown",
            "RequestTimeout",
            "RequestTimeoutException",
        }
        if status >= 500 or status == 429 or code in retryable_codes:
            return RetryableError(message)
        return PermanentError(message)
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return RetryableError(f"{what}: {exc}")
    if isinstance(exc, BotoCoreError):
        # ParamValidationError and the like: the request itself is wrong.
        name = type(exc).__name__
        if "Param" in name or "Validation" in name:
            return PermanentError(f"{what}: {exc}")
        return RetryableError(f"{what}: {exc}")
    return RetryableError(f"{what}: {exc}")


def aws_call(what: str, call: Callable[[], T]) -> T:
    """Run one AWS API call, translating its errors for the retry policy."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
        raise classify_aws_error(exc, what) from exc


def need_setting(value: str | None, variable: str) -> str:
    if not value:
        raise PermanentError(f"{variable} is not set")
    return value
