"""The drainer's INFO line for finished batches: one line per ``SUMMARY_EVERY_SECONDS``
of work and one when a drain invocation ends, not one per batch.

At low load every batch is one task, so a line per batch was a line per task: a
Powertools JSON line costs about 300k instructions, 15 % of what a drainer process
spends on a one-task batch at INFO (bench/RESULTS.md, round 9), and its cost grew with
the task rate.  The summary's cost grows with time instead; the per-batch line is
DEBUG (``metrics.log_finished``), with the per-task lines, and dead letters stay
WARNING per task.  Every transition is counted all the same by PostgreSQL (the metrics
trigger) and recorded in the audit trail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from chalicelib.observability.log import logger
from chalicelib.observability.metrics import OUTCOME_KINDS as OUTCOMES

SUMMARY_EVERY_SECONDS = 10.0


class FinishedSummary:
    """Sums finished batches and writes them as one INFO line (``event`` "batches")
    once ``every`` seconds have passed since the first batch it holds, or on ``flush``.

    ``add`` runs on the drainer's recorder thread and ``flush_due``/``flush`` on its
    loop, hence the lock."""

    def __init__(
        self, worker: str, *, every: float = SUMMARY_EVERY_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.worker = worker
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, since: float | None) -> None:
        self._since = since
        self._batches = 0
        self._tasks = 0
        self._lost = 0
        self._max_ms = 0.0
        self._counts = dict.fromkeys(OUTCOMES, 0)

    def add(self, tally: Mapping[str, int], tasks: int, lost: int, duration_ms: float) -> None:
        """One batch of ``tasks`` outcomes: ``tally`` counts those recorded by outcome,
        ``lost`` those fencing turned away; ``duration_ms`` is claim -> recorded."""
        now = self.clock()
        with self._lock:
            if self._since is None:
                self._since = now
            self._batches += 1
            self._tasks += tasks
            self._lost += lost
            self._max_ms = max(self._max_ms, duration_ms)
            counts = self._counts
            for k in OUTCOMES:
                counts[k] += tally.get(k, 0)
            due = now - self._since >= self.every
        if due:
            self.flush()

    def flush_due(self) -> None:
        """Write the line if its period is over (the loop calls this while idle, so the
        last batches before a quiet spell are not held back until the drain ends)."""
        since = self._since  # read without the lock: a stale value only delays the line
        if since is not None and self.clock() - since >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write what is held, if anything."""
        with self._lock:
            if not self._batches:
                return
            fields = {
                "event": "batches",
                "worker": self.worker,
                "batches": self._batches,
                "count": self._tasks,
                "lease_lost": self._lost,
                **self._counts,
                "duration_ms_max": round(self._max_ms, 1),
                "seconds": round(self.clock() - (self._since or 0.0), 1),
            }
            self._reset(None)
        logger.info("batches finished", extra=fields)
