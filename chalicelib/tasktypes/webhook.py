"""The internal ``tasklane.webhook`` executor: delivers completion callbacks."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.webhooks import WEBHOOK_TASK, deliver
from chalicelib.core.errors import PermanentError
from chalicelib.tasktypes import TaskContext, registry, require


def _validate(payload: Any) -> None:
    require(isinstance(payload, dict) and isinstance(payload.get("url"), str), "webhook payload needs a url")


@registry.task(WEBHOOK_TASK, validate=_validate, internal=True)
def send_webhook(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """POSTs a signed completion event to the task's callback_url."""
    rt = ctx.services
    if rt is None:
        raise PermanentError("webhooks need the drainer's runtime")
    secret = rt.store.webhook_secret(ctx.tenant)
    status = deliver(
        payload,
        secret,
        timeout=min(float(rt.settings.webhook_timeout_seconds), max(ctx.remaining_seconds(), 1.0)),
        allow_private=rt.settings.webhook_allow_private,
        delivery_id=ctx.task_id,
    )
    return {"delivered": True, "status": status, "attempt": ctx.attempt}
