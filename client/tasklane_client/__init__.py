"""Python client for the Tasklane task queue API (sync and asyncio, over httpx).

>>> from tasklane_client import Client
>>> with Client("http://127.0.0.1:8000", "tl_...") as tl:  # doctest: +SKIP
...     task = tl.submit("noop", {"hello": "world"}, priority="high")
...     tl.wait(task.id, timeout=30)
{'hello': 'world'}
"""

from tasklane_client._async import AsyncClient
from tasklane_client._core import RetryConfig, __version__
from tasklane_client._sync import Client
from tasklane_client.errors import (
    ApiError,
    ClientError,
    ConflictError,
    ForbiddenError,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TasklaneError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedMediaTypeError,
    ValidationError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from tasklane_client.models import (
    AttemptError,
    AuditEntry,
    Batch,
    BatchItem,
    BatchResult,
    NewTask,
    Page,
    Priority,
    PurgeResult,
    RedriveResult,
    Schedule,
    ScheduleRun,
    ScheduleTask,
    Stats,
    Task,
    TaskEvent,
    TaskStatus,
    WebhookEvent,
    WebhookSecret,
)
from tasklane_client.webhooks import sign_webhook, verify_webhook

__all__ = [
    "ApiError",
    "AsyncClient",
    "AttemptError",
    "AuditEntry",
    "Batch",
    "BatchItem",
    "BatchResult",
    "Client",
    "ClientError",
    "ConflictError",
    "ForbiddenError",
    "NetworkError",
    "NewTask",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "Priority",
    "PurgeResult",
    "RateLimitedError",
    "RedriveResult",
    "RetryConfig",
    "Schedule",
    "ScheduleRun",
    "ScheduleTask",
    "ServerError",
    "Stats",
    "Task",
    "TaskCancelledError",
    "TaskError",
    "TaskEvent",
    "TaskFailedError",
    "TaskStatus",
    "TasklaneError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "WaitTimeoutError",
    "WebhookEvent",
    "WebhookSecret",
    "WebhookVerificationError",
    "__version__",
    "sign_webhook",
    "verify_webhook",
]
