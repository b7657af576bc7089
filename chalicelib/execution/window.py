"""A drain Lambda invocation's time, as the tasks it claims see it.

An invocation ends for good when its time does: a task it starts whose timeout reaches
past that end is killed with it, and runs again only once its lease has expired, an
attempt spent and its side effects perhaps done twice.  So a task about to start (a
lane checks as it takes the task, not when the batch was claimed: a task queued behind
slow ones starts later) whose timeout reaches past the point where the invocation stops
claiming is handed back unstarted (``Outcomes.handed_back``: no attempt spent), due at
once, and the invocation claims no more and ends once its batch has (``Drainer.run``):
claiming on, it would only hand back more of the queue, each task a snooze, while the
drain function's next invocation, scheduled within a minute with its full time, can run
them.

Only when a fresh invocation could run it: a task whose timeout is longer than a whole
invocation (task timeouts go up to 900 s, the drain function's own) would otherwise be
handed back forever, so it runs as it always did (README: keep task timeouts below the
drain function's).  A fresh invocation's time is this one's at its start: the
function's timeout, less a cold start."""

from __future__ import annotations

import time
from dataclasses import dataclass


class HandedBack(Exception):
    """A lane's reason not to start a task (``lanes.lane``): ``left`` seconds to go."""

    def __init__(self, left: float) -> None:
        super().__init__(f"{left:.1f} s left")
        self.left = left


@dataclass(frozen=True, slots=True)
class Window:
    """``until``: when the invocation stops claiming (``time.monotonic``: its end less
    the drain margin); ``fresh``: the seconds an invocation has up to that point from its
    start."""

    until: float
    fresh: float

    def refusal(self, timeout_seconds: float) -> HandedBack | None:
        """Why a task with this timeout, about to start, is handed back; None: start it."""
        left = self.until - time.monotonic()
        return HandedBack(left) if left < timeout_seconds <= self.fresh else None
