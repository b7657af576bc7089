"""Task ids: time-ordered UUIDs (version 7, RFC 9562).

The first 48 bits are the Unix time in milliseconds, the other 74 (after the version
and variant bits) random.  Consecutive tasks get neighbouring ids, so the inserts into
the primary key of ``tasks`` and into ``task_events``' (task_id, id) index land on the
rightmost leaves instead of a random page of an index that grows with the history
(with 10,000,000 finished tasks, drain kept 0.80 of its empty-table rate with random
ids and 1.03-1.04 with these: bench/RESULTS.md, "10,000,000 finished tasks").  They
also give each id a day, which a table range-partitioned on id needs
(docs/partitioning.md).
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from collections.abc import Iterator

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class _Randomness:
    """Random hex digits from ``os.urandom``, drawn 4 KiB at a time.

    ``os.urandom`` releases the GIL around its system call.  With the background
    pusher (``adapters/redis/pusher.py``) woken by the previous submit and waiting for
    the GIL, each such call on a submit's path handed it the GIL, and the submit then
    waited for the pusher's Python up to its next socket call: the two draws of a single
    submit (the id, the trace root) were the pusher's way in before the INSERT (issue 14
    round 10).  Drawn in bulk the digits are the same CSPRNG's; a forked child starts a
    buffer of its own (``os.register_at_fork``), so parent and child never share one."""

    _BLOCK = 4096  # bytes a draw: 8,192 digits, ~180 single submits (an id and a root each)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hex = ""
        self._at = 0

    def reset(self) -> None:
        self._lock = threading.Lock()  # a fork may have copied it held
        self._hex, self._at = "", 0

    def take(self, digits: int) -> str:
        """``digits`` random hex digits, never handed out twice."""
        with self._lock:
            at = self._at
            if at + digits > len(self._hex):
                self._hex, at = secrets.token_hex(max(self._BLOCK, digits)), 0
            self._at = at + digits
            return self._hex[at : at + digits]


_randomness = _Randomness()
os.register_at_fork(after_in_child=_randomness.reset)


def random_hex(digits: int) -> str:
    """``digits`` hex digits from the operating system's CSPRNG (``os.urandom``), from a
    buffer: no system call, so no release of the GIL, on most calls."""
    return _randomness.take(digits)


def new_ids(count: int) -> list[str]:
    """``count`` version-7 UUIDs as text, from one clock read and one draw of
    randomness (``random_hex``; a bulk submit paid ~2 µs a task for ``uuid4``'s system
    call and its ``UUID`` object).  Ids of one call share their millisecond; within it their order
    is random, which keeps them unique without a counter."""
    ms = f"{time.time_ns() // 1_000_000:012x}"
    head = f"{ms[:8]}-{ms[8:]}-7"
    h = random_hex(20 * count)
    return [
        f"{head}{h[i : i + 3]}-{_VARIANT[h[i + 3]]}{h[i + 4 : i + 7]}-{h[i + 7 : i + 19]}"
        for i in range(0, 20 * count, 20)
    ]


def lease_tokens() -> Iterator[str]:
    """Lease tokens for one drainer, one per claimed batch: a version-4 UUID's first 74
    random bits drawn once, then a 48-bit counter.  A token fences an attempt (a stale
    drainer's outcome is refused): it must be unique, not secret.  ``uuid4`` per batch
    was a system call and a ``UUID`` object on the path from the claim to the task's
    start."""
    h = secrets.token_hex(10)
    prefix = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{_VARIANT[h[15]]}{h[16:19]}-"
    for n in itertools.count():
        yield f"{prefix}{n & 0xFFFFFFFFFFFF:012x}"
