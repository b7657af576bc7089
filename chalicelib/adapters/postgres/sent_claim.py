"""A claim statement written by the drain loop, its rows read by the lane thread that
then runs the batch's first task (``SentClaim``).

Why: a claim's rows were read by the loop, which then woke a lane of the batch runner
for the task: 0.06-0.07 ms from the rows to the task's start at 200 tasks/s on our
2-core VM, the lane's wake-up and its wait for the GIL (issue 14, round 20).  The lane
is woken while the statement is on its way instead, and waits for the rows itself, so
the kernel wakes it when they arrive, as it woke the loop.

The connection (the loop's held one, or the pool's) is the reader's from the write to
the end of ``batch``, and the loop's again after: the loop waits for the batch before it
claims again.  The store's connection context spans both halves, so errors come out
translated and a broken held connection goes back to the pool, as for ``Store.claim``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack

from chalicelib.adapters.postgres.claim_order import claimed
from chalicelib.adapters.postgres.direct import Row
from chalicelib.core.model import Claimed


class SentClaim:
    """A claim on its way; ``batch`` (once, on any thread) reads what it claimed."""

    def __init__(self, stack: ExitStack, read: Callable[[], list[Row]], ids: Sequence[str]) -> None:
        self._stack = stack
        self._read = read
        self._ids = ids

    def batch(self) -> list[Claimed]:
        """``Store.claim``'s answer: the claimed tasks in the order of the ids."""
        with self._stack:
            rows = self._read()
        return claimed(rows, self._ids)
