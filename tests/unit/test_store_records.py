"""The store's column contract, without I/O: every named query whose rows the store
turns into a record says which one (``-- Rows: Record (core/module.py)``), the record
exists there with a ``from_row``, and ``from_row`` builds it from exactly such a row."""

from __future__ import annotations

import importlib
import re
from datetime import UTC, datetime

import pytest

from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.core.model import Claimed, Priority, Status
from chalicelib.core.records import ApiKeyRecord, Recorded, Schedule, ScheduleRun, StoredKey, TaskEvent

_ROWS = re.compile(r"^-- Rows: (\w+) \((core/\w+\.py)\)", re.MULTILINE)

# Queries whose rows never become a record: writes, and those the store answers with
# a scalar (a bool, a count, a version, a secret) or that set up a transaction.
SCALAR = {
    "advance_schedule",
    "archive_drop_lock_wait",
    "archive_finished",
    "count_archive_partition",
    "count_deduplicated",
    "drop_archive_partition",
    "ensure_archive_partitions",
    "restore_archived",
    "delete_schedule",
    "drop_event_partition",
    "ensure_event_partitions",
    "fold_metric_deltas",
    "existing_ids",
    "insert_workflow",
    "lock_archive",
    "lock_cancel_cascade",
    "forget_idempotency_keys",
    "insert_task_now",
    "prune_batches",
    "prune_finished",
    "prune_unique_keys",
    "prune_workflows",
    "rotate_webhook_secret",
    "schema_version",
    "set_progress",
    "submit_lock",
    "try_fold_lock",
    "webhook_secret",
}


def test_every_query_names_the_record_its_rows_become() -> None:
    named = queries()
    missing = []
    for name, sql in named.items():
        found = _ROWS.search(sql)
        if found is None:
            if name not in SCALAR:
                missing.append(name)
            continue
        assert name not in SCALAR, f"{name} is listed as scalar but names a record"
        cls_name, module_path = found.groups()
        module = importlib.import_module("chalicelib." + module_path.removesuffix(".py").replace("/", "."))
        cls = getattr(module, cls_name, None)
        assert cls is not None, f"{name}: {cls_name} is not in {module_path}"
        assert callable(getattr(cls, "from_row", None)), f"{name}: {cls_name} has no from_row"
    assert not missing, f"queries returning rows without a '-- Rows:' line: {missing}"


def test_from_row_converts_ids_enums_and_nullable_columns() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    event = TaskEvent.from_row(
        {"at": at, "from_status": None, "to_status": "QUEUED", "attempt": 0, "actor": "api", "error": None}
        | {"error_type": None}
    )
    assert event.from_status is None and event.to_status is Status.QUEUED
    row = {"id": "a", "tenant": "t", "name": "n", "status": "PENDING", "priority": "low", "attempts": 2}
    recorded = Recorded.from_row(
        row | {"run_at_ms": 5.0, "hook_id": None, "hook_enqueued_ms": None, "has_followers": False, "redrives": 2}
    )
    assert (recorded.status, recorded.priority, recorded.hook_id) == (Status.PENDING, Priority.LOW, None)
    assert recorded.redrives == 2
    run = ScheduleRun.from_row({"fire_at": at, "task_id": "b", "status": None})
    assert run.status is None
    key = {"id": 7, "tenant": "t", "name": "", "key_prefix": "tl_x", "rate_limit_per_minute": None}
    key |= {"created_at": at, "expires_at": at, "disabled_at": None}
    stored = StoredKey.from_row(key | {"key_hash": "h", "active": False})
    assert stored.key == ApiKeyRecord.from_row(key) and stored.key.id == "7"
    assert stored.key.state(at) == "expired" and stored.key.state(datetime(2025, 1, 1, tzinfo=UTC)) == "active"
    claimed = Claimed.from_row(
        {"id": "c", "tenant": "t", "name": "n", "priority": "high", "payload": {}, "attempts": 1}
        | {"max_retries": 3, "timeout_seconds": 30, "enqueued_at": at, "started_at": at}
    )
    assert claimed.wait_seconds == 0.0


def test_a_renamed_column_fails_loudly() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    row = {"id": "s", "tenant": "t", "name": "n", "cron": "* * * * *", "timezone": "UTC", "task_name": "noop"}
    row |= {"payload": {}, "priority": "normal", "max_retries": 3, "timeout_seconds": 30, "enabled": True}
    row |= {"catch_up": "once", "last_fired_at": None, "created_at": at, "updated_at": at}
    assert Schedule.from_row(row | {"next_fire_at": at}).next_fire_at == at
    with pytest.raises(KeyError, match="next_fire_at"):
        Schedule.from_row(row | {"next_fire": at})
