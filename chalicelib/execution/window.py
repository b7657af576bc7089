"""A drain Lambda invocation's time, as the tasks it claims see it.

An invocation ends for good when its time does: a task it starts whose timeout reaches
past that end is killed with it, and runs again only once its lease has expired, an
attempt spent and its side effects perhaps done twice.  So such a task is handed back
unstarted (``Outcomes.handed_back``: no attempt spent), due when this invocation stops
claiming or within a minute, for an invocation with the time to run it (the drain
function is invoked every minute, each with its full timeout).

Only when a fresh invocation could run it: a task whose timeout is longer than a whole
invocation (task timeouts go up to 900 s, the drain function's own) would otherwise be
handed back forever, so it runs as it always did (README: the drain margin should be at
least the longest task timeout).  A fresh invocation's time is this one's at its start:
the function's timeout, less a cold start."""

from __future__ import annotations

import time
from dataclasses import dataclass

# A task handed back is due again once this invocation stops claiming, or after this
# long if that is sooner: the drain function is invoked every minute, and a newer
# invocation (with more time) should not wait for an old one's end, which may be
# nearly a task timeout away.  If the old one claims it again meanwhile it hands it
# back again (each time a snooze, no attempt).
MAX_DELAY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Window:
    """``until``: when the invocation stops claiming (``time.monotonic``: its end less
    the drain margin); ``fresh``: the seconds an invocation has up to that point from its
    start."""

    until: float
    fresh: float

    def left(self) -> float:
        return self.until - time.monotonic()

    def hands_back(self, timeout_seconds: float, left: float) -> bool:
        """Whether a task with this timeout, about to start with ``left`` seconds to go,
        is handed back rather than started."""
        return left < timeout_seconds <= self.fresh
