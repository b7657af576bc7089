"""The internal ``tasklane.webhook`` task type: delivers completion callbacks."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.webhooks import deliver
from chalicelib.core.errors import PermanentError
from chalicelib.core.model import WEBHOOK_TASK
from chalicelib.tasktypes.catalog import registry, require
from chalicelib.tasktypes.context import TaskContext


def _validate(payload: Any) -> None:
    require(isinstance(payload, dict) and isinstance(payload.get("url"), str), "webhook payload needs a url")


@registry.task(WEBHOOK_TASK, validate=_validate, internal=True)
def send_webhook(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """POSTs a signed completion event to the callback_url of a task or a batch."""
    secrets = ctx.ports.webhook_secrets
    if secrets is None:
        raise PermanentError("webhooks need the drainer's webhook secrets (they always run inline)")
    settings = ctx.ports.settings_or_env()
    status = deliver(
        payload,
        secrets.webhook_secret(ctx.tenant),
        timeout=min(float(settings.webhook_timeout_seconds), max(ctx.remaining_seconds(), 1.0)),
        allow_private=settings.webhook_allow_private,
        delivery_id=ctx.task_id,
        trace=ctx.trace_headers(),
    )
    return {"delivered": True, "status": status, "attempt": ctx.attempt}
