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
import secrets
import time
from collections.abc import Iterator

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_ids(count: int) -> list[str]:
    """``count`` version-7 UUIDs as text, from one clock read and one draw of
    randomness (a bulk submit paid ~2 µs a task for ``uuid4``'s system call and its
    ``UUID`` object).  Ids of one call share their millisecond; within it their order
    is random, which keeps them unique without a counter."""
    ms = f"{time.time_ns() // 1_000_000:012x}"
    head = f"{ms[:8]}-{ms[8:]}-7"
    h = secrets.token_hex(10 * count)
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
