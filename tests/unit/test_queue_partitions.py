"""Queue partitions (``TASKLANE_QUEUE_PARTITIONS``): the key and partition mapping, and
the setting's validation.  No I/O."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from chalicelib.adapters.redis.keys import FAMILIES, MAX_PARTITIONS, PARTITIONED, Keys, partition_of, partition_tag
from chalicelib.config import ConfigError, Settings


def test_partition_zero_is_exactly_the_unpartitioned_keys() -> None:
    zero, plain = Keys("app", 0), Keys("app")
    assert zero.tag == plain.tag == "{app}"
    assert zero.leases == "{app}:leases" and zero.epoch == plain.epoch
    assert zero.tenant_ready("acme") == "{app}:queue:acme"


def test_each_partition_has_a_hash_tag_of_its_own() -> None:
    parts = [Keys("app", p) for p in range(8)]
    assert [k.tag for k in parts[:3]] == ["{app}", "{app:1}", "{app:2}"]
    assert len({k.tag for k in parts}) == 8
    for k in parts:
        for key in (k.delayed, k.leases, k.active_tenants, k.fair_finish, k.fair_clock, k.tenant_weight, k.epoch):
            assert key.startswith(partition_tag("app", k.partition) + ":"), key
        assert k.tenant_ready("t").startswith(k.tag + ":")
    assert PARTITIONED <= set(FAMILIES)


def test_partition_bounds_are_enforced() -> None:
    Keys("app", MAX_PARTITIONS - 1)
    for bad in (-1, MAX_PARTITIONS):
        with pytest.raises(ValueError, match="partition"):
            Keys("app", bad)


PINNED = [0, 3, 3, 3]  # CRC-32 of the id modulo 1, 4, 7, 64: a change moves queued ids


def test_an_ids_partition_is_a_stable_hash_spread_evenly() -> None:
    tid = "7f0c6a86-1b1c-4c8e-9d43-0c7e6c1d3c11"
    # CRC-32, not Python's per-process salted hash: every process agrees, run after run.
    assert [partition_of(tid, n) for n in (1, 4, 7, 64)] == PINNED
    counts = Counter(partition_of(str(uuid.uuid4()), 4) for _ in range(8000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(1700 < n < 2300 for n in counts.values()), counts


def test_queue_partitions_setting_is_validated() -> None:
    assert Settings.from_env({}).queue_partitions == 1
    assert Settings.from_env({"TASKLANE_QUEUE_PARTITIONS": "4"}).queue_partitions == 4
    assert Settings.from_env({"TASKLANE_QUEUE_PARTITIONS": "64"}).queue_partitions == 64
    for bad, why in (("0", ">= 1"), ("65", "<= 64"), ("four", "integer"), ("2.5", "integer")):
        with pytest.raises(ConfigError, match=f"TASKLANE_QUEUE_PARTITIONS must be.*{why}"):
            Settings.from_env({"TASKLANE_QUEUE_PARTITIONS": bad})
