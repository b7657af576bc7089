"""The heads of the queue partitions: what a claim reads to pick where to claim from.

A partition's head is the lowest ready score among its tenants' ready sets (and, in
partition 0, its limited types' ready sets) and its earliest delayed id when due,
scored as the claim script will score it.  ``Queue.claim`` tries the partitions best
head first (``queue.py``; the reasoning: docs/scaling.md, "Queue partitions").
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from chalicelib.adapters.redis.client import RedisLike, as_text
from chalicelib.adapters.redis.keys import Keys

Ranked = list[tuple[float, int, int]]  # (head score or inf, turn, partition)


def read_heads(
    client: RedisLike,
    parts: Sequence[Keys],
    known: Sequence[tuple[str, ...]],
    limited: Sequence[str],
    head_starts: Sequence[float],
    turn: int,
) -> tuple[Ranked, dict[int, set[str]]]:
    """One pipeline: each partition's active tenants, the first member of its delayed
    set and of the ready set of each tenant in ``known[p]`` (and of each limited type
    in partition 0).  Returns the partitions ranked as ``(head, (p - turn) mod n, p)``
    (equal heads take turns) and, per partition, the active tenants ``known`` lacks
    (their heads were not read).  The caller translates Redis errors."""
    now_ms = time.time() * 1000
    n = len(parts)
    pipe = client.pipeline(transaction=False)
    for p, part in enumerate(parts):
        pipe.smembers(part.active_tenants)
        pipe.zrange(part.delayed, 0, 0, withscores=True)
        for tenant in known[p]:
            pipe.zrange(part.tenant_ready(tenant), 0, 0, withscores=True)
        if p == 0:
            for name in limited:
                pipe.zrange(part.typed_ready(name), 0, 0, withscores=True)
    replies = iter(pipe.execute())
    ranked: Ranked = []
    unknown: dict[int, set[str]] = {}
    for p in range(n):
        active = {as_text(r) for r in next(replies)}
        best = math.inf
        for member, due in next(replies):
            # Only a due id counts (by this process's clock; a skew of a few ms only
            # delays it by as much); its rank is the member's first character.
            if float(due) <= now_ms:
                best = float(due) - head_starts[int(as_text(member)[:1])]
        heads = [next(replies) for _ in known[p]]
        if p == 0:
            heads += [next(replies) for _ in limited]
        for head in heads:
            for _, score in head:
                best = min(best, float(score))
        if not active.issubset(known[p]):
            unknown[p] = active - set(known[p])
        ranked.append((best, (p - turn) % n, p))
    return ranked, unknown
