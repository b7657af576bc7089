"""The scheduled functions' bodies (drain and sweep), free of Chalice types.

``app.py`` passes the Lambda context in; locally ``tools.devstack.supervisor`` passes a
stand-in with the same ``get_remaining_time_in_millis``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.container import get_container

if TYPE_CHECKING:
    from chalicelib.services.drain import Drainer

# Each function imports its own use case on its first call: the drain function does
# not load the sweep's (schedules, croniter), nor the sweep function the drainer's.


class LambdaContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


_drainer: Drainer | None = None
_lock = threading.Lock()


def _get_drainer() -> Drainer:
    global _drainer
    with _lock:
        if _drainer is None:
            from chalicelib.services.drain import Drainer

            _drainer = Drainer(get_container())
        return _drainer


def drain(context: LambdaContextLike | None, *, idle_exit_seconds: float | None = None) -> dict[str, Any]:
    """Drain until the invocation's time is nearly spent or the queue stays empty.

    Without a context (a direct call), the budget is one minute, and every task claimed
    is run; an invocation ends for good with its time, so a task that would outlast it
    is handed back unstarted for one that has the time (``execution/window.py``)."""
    hard = context is not None and hasattr(context, "get_remaining_time_in_millis")
    if context is not None and hard:
        remaining = lambda: context.get_remaining_time_in_millis() / 1000.0  # noqa: E731
    else:
        deadline = time.monotonic() + 60.0
        remaining = lambda: deadline - time.monotonic()  # noqa: E731
    rt = get_container()
    if idle_exit_seconds is None:
        idle_exit_seconds = rt.settings.drain_idle_exit_seconds
    return _get_drainer().run(remaining, idle_exit_seconds=idle_exit_seconds, hard_deadline=hard).as_dict()


def sweep() -> dict[str, Any]:
    from chalicelib.services.sweep import sweep as run_sweep

    return run_sweep(get_container()).as_dict()
