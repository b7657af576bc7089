"""Wake a drainer when none is alive (``TASKLANE_WAKE_DRAIN=lambda``).

In AWS the drain function runs on a one-minute schedule and, while it runs, picks
up a new task within milliseconds.  Between runs (an idle drain exits after
``TASKLANE_DRAIN_IDLE_EXIT_SECONDS``) a task could wait up to a minute; so after
a successful submit or redrive the API checks a heartbeat key that every drainer
refreshes on each loop (``Keys.drainer_alive``, TTL
``TASKLANE_DRAINER_ALIVE_SECONDS``).  When it is missing, the API invokes the drain
function asynchronously (``InvocationType=Event``) ``TASKLANE_DRAIN_FANOUT`` times.
A short ``SET NX`` guard (``Keys.drainer_waking``) makes one request of a burst
do the waking.

Locally this is off: the local stack's drainers always run.  The functions take the
settings and the Redis presence adapter (``adapters/redis/presence.py``) as arguments;
the caller (app.py's middleware, the drainer) wires them.  Failures here never
fail the request: the task is committed and the schedule will drain it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from chalicelib.adapters.redis.presence import Presence
from chalicelib.config import Settings
from chalicelib.core.errors import QueueError
from chalicelib.observability.log import logger

_last_mark = 0.0
# The routes that make work ready at once: submits, redrives, a workflow's first
# steps, and a paused type's tasks pushed again on resume.
WAKE_PATHS = {
    "/api/v1/tasks",
    "/api/v1/tasks/batch",
    "/api/v1/workflows",
    "/api/v1/dead-letters/redrive",
    "/api/v1/dead-letters/{task_id}/redrive",
    "/api/v1/task-types/{name}/resume",
}


def mark_alive(s: Settings, presence: Presence) -> None:
    """Called by drainers on every loop; writes at most every third of the TTL."""
    global _last_mark
    now = time.monotonic()
    if now - _last_mark < s.drainer_alive_seconds / 3:
        return
    try:
        presence.mark_alive(s.drainer_alive_seconds)
        _last_mark = now
    except QueueError as exc:  # a heartbeat must never stop the drain loop
        logger.debug("drainer heartbeat failed", extra={"error": str(exc)})


def drain_event() -> dict[str, Any]:
    """A scheduled-event-shaped payload, so Chalice's schedule handler accepts it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "tasklane.wake",
        "account": "",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "",
        "resources": [],
        "detail": {"reason": "no drainer alive"},
    }


def maybe_wake(s: Settings, presence: Presence) -> int:
    """Invoke the drain function when no drainer is alive; returns how many were invoked."""
    if s.wake_drain != "lambda":
        return 0
    try:
        if presence.any_alive():
            return 0
        # One waker per burst; the woken drainers mark themselves alive within a second or two.
        if not presence.claim_waker(s.drainer_alive_seconds):
            return 0
    except QueueError as exc:  # Redis trouble: the schedule will drain
        logger.warning("could not check for live drainers", extra={"error": str(exc)})
        return 0
    from chalicelib.adapters.aws import clients as awsclients

    client = awsclients.client("lambda", read_timeout=3.0, max_attempts=1)
    invoked = 0
    for _ in range(s.drain_fanout):
        try:
            client.invoke(
                FunctionName=s.drain_function, InvocationType="Event", Payload=json.dumps(drain_event()).encode()
            )
            invoked += 1
        except Exception as exc:  # noqa: BLE001 - never fail the submit over this
            logger.warning("could not wake a drainer", extra={"error": str(exc), "function": s.drain_function})
            break
    if invoked:
        logger.info("woke drainers", extra={"count": invoked, "function": s.drain_function})
    return invoked


def worth_waking(s: Settings, method: str, path: str, status: int) -> bool:
    """After this response, should the API look for a live drainer?  Only when waking
    is on and work was just accepted (a submit or a redrive succeeded)."""
    return s.wake_drain == "lambda" and method == "POST" and path in WAKE_PATHS and status in (200, 201, 207)
