"""The audit log against the real store: each audited change writes exactly one row,
in the same statement as the change (a change that fails or does not happen writes
none, and a row that cannot be written takes the change down with it); the log is
append-only, tenant-scoped and keyset-paginated."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from chalicelib.container import Container
from chalicelib.core.audit import AuditAction, cli_actor
from chalicelib.core.errors import ConflictError, NotFoundError, ValidationError
from chalicelib.core.records import ScheduleSpec
from chalicelib.core.schedules import parse_schedule
from chalicelib.services import audit, lifecycle, schedules
from chalicelib.services.apikeys import create_key
from chalicelib.services.webhook_secret import rotate_webhook_secret
from tests.helpers import query

TENANT = "audited"
OTHER = "audited-other"
ACTOR = "key:11111111-1111-1111-1111-111111111111"


def _rows(rt: Container, tenant: str = TENANT) -> list[tuple[Any, ...]]:
    """(actor, action, subject_type, subject_id, details) of the tenant's rows, oldest first."""
    return query(
        rt.settings.database_url,
        "SELECT actor, action, subject_type, subject_id, details FROM audit_log WHERE tenant = %s ORDER BY id",
        tenant,
    )


def _create(rt: Container, body: dict[str, Any], *, actor: str = ACTOR, tenant: str = TENANT) -> str:
    spec = parse_schedule(body, rt.settings, rt.registry)
    return schedules.create(rt, tenant, spec, actor=actor).schedule.id


def _patch(rt: Container, schedule_id: str, body: dict[str, Any]) -> None:
    def revise(current: ScheduleSpec) -> ScheduleSpec:
        return parse_schedule(body, rt.settings, rt.registry, current=current)

    schedules.update(rt, TENANT, schedule_id, revise, actor=ACTOR)


def test_schedule_changes_are_audited_with_their_actor_and_what_changed(rt: Container) -> None:
    sid = _create(rt, {"name": "nightly", "cron": "0 3 * * *", "task": {"name": "noop"}})
    _patch(rt, sid, {"enabled": False})
    _patch(rt, sid, {"enabled": True, "cron": "0 4 * * *"})
    _patch(rt, sid, {"catch_up": "skip"})
    schedules.delete(rt, TENANT, sid, actor=ACTOR)
    rows = _rows(rt)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (ACTOR, action, "schedule", sid)
        for action in ("schedule.created", "schedule.disabled", "schedule.enabled", "schedule.updated")
    ] + [(ACTOR, "schedule.deleted", "schedule", sid)]
    created, disabled, enabled, updated, deleted = (r[4] for r in rows)
    assert created == {"name": "nightly", "cron": "0 3 * * *", "timezone": "UTC", "task_name": "noop", "enabled": True}
    assert disabled["changed"] == ["enabled"]
    assert sorted(enabled["changed"]) == ["cron", "enabled"]
    assert updated["changed"] == ["catch_up"]
    assert deleted == {"name": "nightly"}


def test_a_change_that_fails_or_does_not_happen_writes_no_audit_row(rt: Container) -> None:
    sid = _create(rt, {"name": "once", "cron": "0 3 * * *", "task": {"name": "noop"}})
    with pytest.raises(ConflictError):
        _create(rt, {"name": "once", "cron": "0 9 * * *", "task": {"name": "noop"}})
    with pytest.raises(NotFoundError):
        schedules.delete(rt, OTHER, sid, actor=ACTOR)  # another tenant's schedule
    schedules.delete(rt, TENANT, sid, actor=ACTOR)
    with pytest.raises(NotFoundError):
        schedules.delete(rt, TENANT, sid, actor=ACTOR)  # gone already
    purged = lifecycle.purge_dead_letters(rt, TENANT, lifecycle.PurgeSelection(name="fail"), actor=ACTOR)
    assert purged.ids == []  # nothing to purge: nothing recorded
    assert [r[1] for r in _rows(rt)] == ["schedule.created", "schedule.deleted"]
    assert _rows(rt, OTHER) == []


def test_an_audit_row_that_cannot_be_written_rolls_the_change_back(rt: Container) -> None:
    """The row is part of the change's statement: an actor the table refuses (empty)
    fails the whole statement, so the schedule, the key and the secret stay as they were."""
    body = {"name": "atomic", "cron": "0 3 * * *", "task": {"name": "noop"}}
    with pytest.raises(ValidationError):
        _create(rt, body, actor="")
    assert schedules.list_all(rt, TENANT) == []
    with pytest.raises(ValidationError):
        create_key(rt.store, TENANT, actor="")
    assert rt.store.list_api_keys(TENANT) == []
    secret = rt.store.webhook_secret(TENANT)
    with pytest.raises(ValidationError):
        rotate_webhook_secret(rt, TENANT, actor="x" * 201)
    assert rt.store.webhook_secret(TENANT) == secret
    assert _rows(rt) == []


def test_keys_and_the_webhook_secret_are_audited_without_secrets(rt: Container) -> None:
    operator = cli_actor("alice")
    secret, key = create_key(rt.store, TENANT, actor=operator, name="ci", rate_limit_per_minute=60)
    assert rt.store.revoke_api_key(key.key_prefix, actor=operator) is not None
    again = rt.store.revoke_api_key(key.id, actor=operator)  # revoked already: nothing changes
    assert again is not None and again.disabled_at is not None
    old = rt.store.webhook_secret(TENANT)
    new = rotate_webhook_secret(rt, TENANT, actor=ACTOR)
    rows = _rows(rt)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (operator, "api_key.created", "api_key", key.id),
        (operator, "api_key.revoked", "api_key", key.id),
        (ACTOR, "webhook_secret.rotated", "webhook_secret", None),
    ]
    assert rows[0][4] == {"name": "ci", "key_prefix": key.key_prefix, "rate_limit_per_minute": 60, "expires_at": None}
    text = str(rows)
    assert secret not in text and old not in text and new not in text


def test_the_audit_log_is_append_only(rt: Container) -> None:
    rotate_webhook_secret(rt, TENANT, actor=ACTOR)
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        for sql in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(sql)
    assert [r[0] for r in _rows(rt)] == [ACTOR]


def test_entries_are_tenant_scoped_filtered_and_keyset_paginated(rt: Container) -> None:
    for i in range(7):
        rotate_webhook_secret(rt, TENANT, actor=f"key:{i}")
    _create(rt, {"name": "a", "cron": "0 3 * * *", "task": {"name": "noop"}})
    rotate_webhook_secret(rt, OTHER, actor="key:other")
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = audit.entries(rt, TENANT, action=None, limit=3, after=after)
        seen += [e.actor for e in page.items]
        pages += 1
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == 3 and len(seen) == 8
    assert seen == [ACTOR, *(f"key:{i}" for i in reversed(range(7)))]  # newest first
    rotated = audit.entries(rt, TENANT, action=AuditAction.WEBHOOK_SECRET_ROTATED, limit=50, after=None)
    assert len(rotated.items) == 7 and rotated.next_after is None
    assert all(e.tenant == TENANT for e in rotated.items)
    other = audit.entries(rt, OTHER, action=None, limit=50, after=None)
    assert [e.actor for e in other.items] == ["key:other"]
