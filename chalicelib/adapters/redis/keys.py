"""Every Redis key Tasklane uses, named in one place.

All keys start with one hash tag, ``{prefix}`` (``TASKLANE_REDIS_PREFIX``, default
``tasklane``).  Redis Cluster hashes only the part in braces, so every key lands
in the same slot and the multi-key Lua scripts stay legal in cluster mode (each
script still declares every key it touches in KEYS, as cluster mode requires).

Queue partitions (``TASKLANE_QUEUE_PARTITIONS``, default 1): partition 0 is exactly
the keys above; partition *p* > 0 repeats the per-partition families (``PARTITIONED``:
ready, delayed and lease sets, fair-queueing state, tenant weights, its own sentinel)
under a tag of its own, ``{prefix:p}``, so that partitions spread over a cluster's
shards.  Every other family lives in partition 0 only.  A task id's partition is
``partition_of`` (a stable hash of the id), except that task types with limits and
tenants with a running quota live wholly in partition 0 (``queue.py`` decides).

One slot also keeps the rebuild sentinel (``epoch``) honest in a cluster: it lives on
the same master as the sets it vouches for, so a master that loses its data loses the
sentinel too, and one that holds none of these keys has nothing of Tasklane's to lose.

Redis holds nothing PostgreSQL cannot give back: a key is either rebuilt by the
sweeper from PostgreSQL, or expires by itself, or is harmless to lose.  The
table below is the contract; ``Keys`` builds the names and nothing else does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from chalicelib.config import MAX_QUEUE_PARTITIONS

MAX_PARTITIONS: Final = MAX_QUEUE_PARTITIONS


def hash_tag(prefix: str) -> str:
    """``{prefix}``: the cluster hash tag every key begins with."""
    return "{" + prefix + "}"


def partition_tag(prefix: str, partition: int) -> str:
    """The hash tag of queue partition ``partition``: ``{prefix}`` for 0 (today's keys),
    ``{prefix:p}`` for the others, each its own cluster slot."""
    return hash_tag(prefix if partition == 0 else f"{prefix}:{partition}")


def partition_of(task_id: str, partitions: int) -> int:
    """The partition a task id hashes to: CRC-32, the same in every process (Python's
    ``hash`` of a str is salted per process), so submit, cancel, ack and rebuild all
    find an id without a lookup."""
    if partitions <= 1:
        return 0
    return zlib.crc32(task_id.encode()) % partitions


@dataclass(frozen=True)
class KeyFamily:
    """One kind of key: its name after the tag, Redis type, writer and lifetime."""

    pattern: str
    redis_type: str
    owner: str
    lifetime: str


FAMILIES: Final[dict[str, KeyFamily]] = {
    "tenant_ready": KeyFamily(
        ":queue:<tenant>",
        'zset: "<rank>:<id>" -> ready_score; a tenant\'s ready tasks (types without limits)',
        "queue.py (push; the claim script pops)",
        "no TTL; rebuilt from PostgreSQL by the sweeper",
    ),
    "active_tenants": KeyFamily(
        ":tenants",
        "set of tenants whose ready set may be non-empty",
        "queue.py (push adds after the ZADD; the claim script drops emptied ones)",
        "no TTL; rebuilt with the ready sets",
    ),
    "fair_finish": KeyFamily(
        ":fair:finish",
        "hash: tenant -> virtual finish tag (fair share at claim time)",
        "queue.py (the claim script, when two or more tenants compete)",
        "no TTL; harmless to lose (fair share starts afresh)",
    ),
    "fair_clock": KeyFamily(
        ":fair:clock",
        "string: the virtual clock (start tag of the last fair pick)",
        "queue.py (the claim script)",
        "no TTL; harmless to lose",
    ),
    "tenant_weight": KeyFamily(
        ":tenants:weight",
        "hash: tenant -> fair-share weight (only tenants configured otherwise than 1)",
        "queue.py (set_tenant_limits, called by the sweeper from PostgreSQL's tenant_limits)",
        "no TTL; rewritten by every sweep",
    ),
    "tenant_max_running": KeyFamily(
        ":tenants:max_running",
        "hash: tenant -> most tasks running at once (only tenants with that quota)",
        "queue.py (set_tenant_limits, called by the sweeper from PostgreSQL's tenant_limits)",
        "no TTL; rewritten by every sweep",
    ),
    "quota_refused": KeyFamily(
        ":tenants:refused",
        'hash: "<quota>:<tenant>" -> tasks refused by that quota (a Prometheus counter)',
        "queue.py (count_refusal, called by the submit path on a 429)",
        "no TTL; lost with Redis (Prometheus reads the drop as a counter reset)",
    ),
    "tenant_running": KeyFamily(
        ":running:<tenant>",
        "zset: task id -> lease deadline (ms); a tenant's running slots (tenants with max_running)",
        "queue.py (the claim and extend scripts, ack)",
        "entries past their deadline are dropped by the claim script; rebuilt by the sweeper",
    ),
    "typed_ready": KeyFamily(
        ":ready:<task type>",
        "zset: task id -> ready_score, for a task type with limits",
        "queue.py (push; the claim script pops)",
        "no TTL; rebuilt from PostgreSQL by the sweeper",
    ),
    "delayed": KeyFamily(
        ":due",
        'zset: "<rank>:<id>:<tenant length>:<tenant>[<task type>]" -> due time (ms)',
        "queue.py (push, ack of retries; the claim script promotes due ones)",
        "no TTL; rebuilt from PostgreSQL by the sweeper",
    ),
    "leases": KeyFamily(
        ":leases",
        "zset: task id -> lease deadline (ms)",
        "queue.py (the claim and extend scripts, ack)",
        "no TTL; rebuilt from PostgreSQL (PROCESSING rows) by the sweeper",
    ),
    "inflight": KeyFamily(
        ":inflight:<task type>",
        "zset: task id -> lease deadline (ms); a type's concurrency slots",
        "queue.py (the claim and extend scripts, ack)",
        "entries past their deadline are dropped by the claim script; rebuilt by the sweeper",
    ),
    "type_rate": KeyFamily(
        ":rate:<task type>",
        "hash: tokens, ts (ms); a type's token bucket",
        "queue.py (the claim script)",
        "PEXPIRE when the bucket would be full again",
    ),
    "wake": KeyFamily(
        ":wake",
        "list of wake tokens, at most 8 (LTRIM)",
        "queue.py (push, wake, ack); idle drainers BLPOP it",
        "no TTL; bounded; losing it only delays a drainer until its idle wait ends",
    ),
    "epoch": KeyFamily(
        ":epoch:v2",
        "string sentinel",
        "queue.py (mark_rebuilt, called by the sweeper)",
        "no TTL; one per queue partition; its absence means that partition lost its data"
        " (or the layout changed: v2 has a ready set per tenant) and must be rebuilt",
    ),
    "last_sweep": KeyFamily(
        ":last_sweep",
        "string: epoch seconds of the last finished sweep",
        "queue.py (mark_swept, called by the sweeper)",
        "no TTL; rewritten by every sweep",
    ),
    "drainer_alive": KeyFamily(
        ":drainer:alive",
        "string heartbeat",
        "presence.py (drainers, every loop)",
        "TTL TASKLANE_DRAINER_ALIVE_SECONDS",
    ),
    "drainer_waking": KeyFamily(
        ":drainer:waking",
        "string guard (SET NX): one waker per burst",
        "presence.py (the API, after accepting work)",
        "TTL TASKLANE_DRAINER_ALIVE_SECONDS",
    ),
    "api_rate": KeyFamily(
        ":rl:<api key id>",
        "string: GCRA theoretical arrival time (us)",
        "ratelimit.py (its script)",
        "TTL until the key's allowance is full again",
    ),
    "idempotency": KeyFamily(
        ":idempotency:<task type>:*",
        "Powertools idempotency records (one per task id)",
        "tasktypes/aws.py (Powertools' CachePersistenceLayer)",
        "TTL TASKLANE_EXECUTOR_IDEMPOTENCY_HOURS",
    ),
}


# The families every queue partition has a copy of; the rest exist in partition 0 only.
PARTITIONED: Final = frozenset(
    {"tenant_ready", "active_tenants", "fair_finish", "fair_clock", "tenant_weight", "delayed", "leases", "epoch"}
)


class Keys:
    """The key names for one prefix and queue partition (see ``FAMILIES`` for what each
    holds; a partition other than 0 uses only the ``PARTITIONED`` families)."""

    __slots__ = (
        "active_tenants",
        "delayed",
        "drainer_alive",
        "drainer_waking",
        "epoch",
        "fair_clock",
        "fair_finish",
        "last_sweep",
        "leases",
        "partition",
        "quota_refused",
        "tag",
        "tenant_max_running",
        "tenant_weight",
        "wake",
    )

    def __init__(self, prefix: str = "tasklane", partition: int = 0) -> None:
        if not 0 <= partition < MAX_PARTITIONS:
            raise ValueError(f"a queue partition is 0 .. {MAX_PARTITIONS - 1}, got {partition}")
        tag = partition_tag(prefix, partition)
        self.tag = tag
        self.partition = partition
        self.active_tenants = tag + FAMILIES["active_tenants"].pattern
        self.fair_finish = tag + FAMILIES["fair_finish"].pattern
        self.fair_clock = tag + FAMILIES["fair_clock"].pattern
        self.tenant_weight = tag + FAMILIES["tenant_weight"].pattern
        self.tenant_max_running = tag + FAMILIES["tenant_max_running"].pattern
        self.quota_refused = tag + FAMILIES["quota_refused"].pattern
        self.delayed = tag + FAMILIES["delayed"].pattern
        self.leases = tag + FAMILIES["leases"].pattern
        self.wake = tag + FAMILIES["wake"].pattern
        self.epoch = tag + FAMILIES["epoch"].pattern
        self.last_sweep = tag + FAMILIES["last_sweep"].pattern
        self.drainer_alive = tag + FAMILIES["drainer_alive"].pattern
        self.drainer_waking = tag + FAMILIES["drainer_waking"].pattern

    def tenant_ready(self, tenant: str) -> str:
        return f"{self.tag}:queue:{tenant}"

    def tenant_running(self, tenant: str) -> str:
        return f"{self.tag}:running:{tenant}"

    def typed_ready(self, task_type: str) -> str:
        return f"{self.tag}:ready:{task_type}"

    def inflight(self, task_type: str) -> str:
        return f"{self.tag}:inflight:{task_type}"

    def type_rate(self, task_type: str) -> str:
        return f"{self.tag}:rate:{task_type}"

    def api_rate(self, subject: str) -> str:
        return f"{self.tag}:rl:{subject}"

    def idempotency_prefix(self, task_type: str) -> str:
        """Powertools appends its own record suffix to this prefix."""
        return f"{self.tag}:idempotency:{task_type}"
