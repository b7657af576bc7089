"""A tenant given a ``max_running`` quota moves into queue partition 0.

Its running set lives there (one key, so the quota holds globally), so its new ids
are pushed there; ids it had queued in other partitions before the quota would be
claimed there without it.  ``move_to_partition_zero`` (the sweeper, through
``Queue.set_tenant_limits``) moves them: ZADD NX into partition 0, then ZREM.  A claim
in between may take an id in both places; the second claim's guarded UPDATE turns it
away, as for any id in Redis twice.  A due retry that a claim promotes in another
partition meanwhile is moved by the next sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from chalicelib.adapters.redis.client import RedisLike, as_text
from chalicelib.adapters.redis.keys import Keys

CHUNK = 1000  # ids moved per round trip


def move_to_partition_zero(client: RedisLike, parts: Sequence[Keys], tenants: Iterable[str]) -> int:
    """Move the ready ids of ``tenants`` from partitions 1.. into partition 0; returns
    how many moved.  One pipeline to find them, then one per chunk.  The caller
    translates Redis errors."""
    names = sorted(set(tenants))
    if len(parts) < 2 or not names:
        return 0
    pipe = client.pipeline(transaction=False)
    places = [(part, name) for part in parts[1:] for name in names]
    for part, name in places:
        pipe.zcard(part.tenant_ready(name))
    moved = 0
    for (part, name), size in zip(places, pipe.execute(), strict=True):
        source, target = part.tenant_ready(name), parts[0].tenant_ready(name)
        while int(size) > 0:
            pipe = client.pipeline(transaction=False)
            pipe.zrange(source, 0, CHUNK - 1, withscores=True)
            (found,) = pipe.execute()
            if not found:
                break
            members = {as_text(m): float(s) for m, s in found}
            pipe = client.pipeline(transaction=False)
            # Into partition 0 first, then out: an id is never in neither.
            pipe.zadd(target, members, nx=True)
            pipe.sadd(parts[0].active_tenants, name)
            pipe.zrem(source, *members)
            pipe.execute()
            moved += len(members)
            size = int(size) - len(members)
    return moved
