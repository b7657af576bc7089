"""Task types: plain functions registered by task name (the strategy pattern).

A task type receives the task's payload and a ``TaskContext`` and returns a
JSON-serialisable result.  It never sees Chalice or Lambda types, nor the
drainer's wiring: only the narrow ports in ``ctx.ports``.  Adding a task type is
one decorated function::

    from chalicelib.tasktypes import TaskContext, registry

    @registry.task("resize-image")
    def resize_image(payload: dict, ctx: TaskContext) -> dict: ...

and one import in ``load_builtin_task_types`` below (a team's own modules register
the same way without editing this package: ``TASKLANE_TASK_MODULES``, see
``loading``).  Delivery is at least once:
use ``ctx.task_id`` and ``ctx.attempt`` to make side effects idempotent.  Raise
``RetryableError`` (optionally with ``retry_after=`` seconds) or any other
exception to retry, ``PermanentError`` (or ``PayloadError``) to dead-letter at once.

Modules inside this package import ``catalog`` and ``context`` directly, never
this package (it imports them: that would be a cycle).
"""

from __future__ import annotations

from chalicelib.tasktypes.catalog import Executor, Registered, Registry, Validator, as_int, registry, require
from chalicelib.tasktypes.context import ProgressReporter, TaskContext, TaskPorts, WebhookSecrets

__all__ = [
    "Executor",
    "ProgressReporter",
    "Registered",
    "Registry",
    "TaskContext",
    "TaskPorts",
    "Validator",
    "WebhookSecrets",
    "as_int",
    "load_builtin_task_types",
    "registry",
    "require",
]


def load_builtin_task_types() -> Registry:
    """Import the modules whose decorators fill ``registry``; returns it."""
    from chalicelib.tasktypes import builtin, email, http_request, pdf, sms, webhook  # noqa: F401  (registers on import)

    return registry
