"""The heads of the queue partitions: what a claim reads to share a batch between them.

Per partition, the best ``depth`` scores of each of its tenants' ready sets (and, in
partition 0, its limited types' ready sets) and of its due delayed ids, scored as the
claim script will score them.  ``Queue.claim`` takes the best ``count`` of all of
them and asks each partition for its share (``queue.py``; the reasoning:
docs/scaling.md, "Queue partitions").
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from chalicelib.adapters.redis.client import RedisLike, as_text
from chalicelib.adapters.redis.keys import Keys


@dataclass
class Heads:
    """What one read saw, per partition (lists indexed by partition)."""

    ranked: list[tuple[float, int, int]]  # (best score or inf, turn, partition)
    scores: list[list[float]]  # every score read, ascending
    more: list[bool]  # some set held at least ``depth``: the partition may hold more
    unknown: dict[int, set[str]]  # active tenants the read did not know (not read)


def read_heads(
    client: RedisLike,
    parts: Sequence[Keys],
    known: Sequence[tuple[str, ...]],
    limited: Sequence[str],
    head_starts: Sequence[float],
    turn: int,
    depths: Sequence[int],
) -> Heads:
    """One pipeline: each partition's active tenants, its first ``depths[p]`` due delayed
    ids and the first ``depths[p]`` of the ready set of each tenant in ``known[p]`` (and
    of each limited type in partition 0).  Partitions rank as ``(best score,
    (p - turn) mod n, p)``, so equal heads take turns.  The caller translates Redis
    errors."""
    # Due by this process's clock: a skew of a few ms only moves an id by as much.
    now_ms = int(time.time() * 1000)
    n = len(parts)
    pipe = client.pipeline(transaction=False)
    for p, part in enumerate(parts):
        pipe.smembers(part.active_tenants)
        pipe.zrangebyscore(part.delayed, "-inf", now_ms, start=0, num=depths[p], withscores=True)
        for tenant in known[p]:
            pipe.zrange(part.tenant_ready(tenant), 0, depths[p] - 1, withscores=True)
        if p == 0:
            for name in limited:
                pipe.zrange(part.typed_ready(name), 0, depths[p] - 1, withscores=True)
    replies = iter(pipe.execute())
    heads = Heads([], [], [], {})
    for p in range(n):
        active = {as_text(r) for r in next(replies)}
        due = next(replies)
        # A delayed member starts with its priority rank: the claim script's head start.
        scores = [float(at) - head_starts[int(as_text(member)[:1])] for member, at in due]
        more = len(due) >= depths[p]
        sets = [next(replies) for _ in known[p]]
        if p == 0:
            sets += [next(replies) for _ in limited]
        for found in sets:
            scores += [float(score) for _, score in found]
            more = more or len(found) >= depths[p]
        scores.sort()
        if not active.issubset(known[p]):
            heads.unknown[p] = active - set(known[p])
        heads.ranked.append((scores[0] if scores else math.inf, (p - turn) % n, p))
        heads.scores.append(scores)
        heads.more.append(more)
    return heads
