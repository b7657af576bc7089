"""Purging dead letters on purpose, over HTTP (Chalice's test client on the real app):
only the tenant's FAILED tasks matching every filter given go, at most ``limit`` a
call with ``more`` telling the rest; each purge is counted and audited under the
caller's key; without a filter nothing happens (400)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from chalicelib.container import Container
from chalicelib.observability import metrics
from chalicelib.services.submit import submit
from tests.helpers import drain_once, query, request
from tests.integration.app_client import api_for

TENANT = "purge"
OTHER = "purge-other"


def _dead(rt: Container, tenant: str = TENANT, *, name: str = "fail", age: str | None = None) -> str:
    task = submit(rt, tenant, request("fail", {"permanent": True})).task
    drain_once(rt)
    db = rt.settings.database_url
    if name != "fail":
        query(db, "UPDATE tasks SET name = %s WHERE id = %s RETURNING id", name, task.id)
    if age is not None:
        query(db, "UPDATE tasks SET finished_at = finished_at - %s::interval WHERE id = %s RETURNING id", age, task.id)
    assert query(db, "SELECT status FROM tasks WHERE id = %s", task.id) == [("FAILED",)]
    return task.id


def _present(rt: Container, ids: list[str]) -> set[str]:
    rows = query(rt.settings.database_url, "SELECT id::text FROM tasks WHERE id = ANY(%s::uuid[])", ids)
    return {r[0] for r in rows}


def _audit(rt: Container) -> list[tuple[Any, ...]]:
    return query(
        rt.settings.database_url,
        "SELECT actor, action, details FROM audit_log WHERE tenant = %s AND action LIKE 'dead_letters.%%' ORDER BY id",
        TENANT,
    )


def _purged_counter(rt: Container) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.render(rt.store, rt.queue)):
        if family.name == "tasklane_dead_letters_purged":
            found.update(
                {s.labels["task_name"]: s.value for s in family.samples if s.name.endswith("_total") and s.value}
            )
    return found


def test_purge_by_ids_name_and_age_takes_only_matching_dead_letters_of_the_tenant(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        young = [_dead(rt) for _ in range(2)]
        old = [_dead(rt, age="10 days") for _ in range(2)]
        other_name = _dead(rt, name="gone-away", age="10 days")
        other_tenant = _dead(rt, OTHER, age="10 days")
        live = submit(rt, TENANT, request(delay_seconds=3600)).task.id
        everyone = [*young, *old, other_name, other_tenant, live]
        key_id = query(rt.settings.database_url, "SELECT id::text FROM api_keys WHERE tenant = %s", TENANT)[0][0]

        by_id = api.post("/api/v1/dead-letters/purge", {"ids": [young[0], live, other_tenant, "not-a-uuid"]})
        assert by_id.status_code == 200, by_id.json_body
        assert by_id.json_body == {"purged": 1, "ids": [young[0]], "more": False}

        cutoff = query(rt.settings.database_url, "SELECT (now() - interval '5 days')::text")[0][0]
        by_age_and_name = api.post("/api/v1/dead-letters/purge", {"name": "fail", "failed_before": cutoff})
        assert by_age_and_name.status_code == 200, by_age_and_name.json_body
        assert sorted(by_age_and_name.json_body["ids"]) == sorted(old)
        assert _present(rt, everyone) == {young[1], other_name, other_tenant, live}

        actions = _audit(rt)
        assert [(a[0], a[1], a[2]["count"]) for a in actions] == [
            (f"key:{key_id}", "dead_letters.purged", 1),
            (f"key:{key_id}", "dead_letters.purged", 2),
        ]
        assert actions[1][2]["filter"]["name"] == "fail" and "failed_before" in actions[1][2]["filter"]
        assert _purged_counter(rt) == {"fail": 3.0}
        # Their history went with them (ON DELETE CASCADE).
        assert query(rt.settings.database_url, "SELECT count(*) FROM task_events WHERE task_id = %s", old[0]) == [(0,)]


def test_purge_by_error_type_takes_only_dead_letters_whose_last_error_is_of_that_type(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        permanent, other = _dead(rt), _dead(rt)
        db = rt.settings.database_url
        query(db, "UPDATE tasks SET last_error_type = 'TimeoutError' WHERE id = %s RETURNING id", other)
        (kind,) = query(db, "SELECT last_error_type FROM tasks WHERE id = %s", permanent)[0]
        purged = api.post("/api/v1/dead-letters/purge", {"error_type": kind})
        assert purged.status_code == 200 and purged.json_body["ids"] == [permanent], purged.json_body
        assert _present(rt, [permanent, other]) == {other}
        assert _audit(rt)[-1][2]["filter"] == {"error_type": kind}
        assert api.post("/api/v1/dead-letters/purge", {"error_type": ""}).status_code == 400


def test_purge_is_bounded_per_call_and_says_whether_more_remain(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        ids = [_dead(rt) for _ in range(5)]
        first = api.post("/api/v1/dead-letters/purge", {"name": "fail", "limit": 3})
        assert first.status_code == 200 and (first.json_body["purged"], first.json_body["more"]) == (3, True)
        second = api.post("/api/v1/dead-letters/purge", {"name": "fail", "limit": 3})
        assert (second.json_body["purged"], second.json_body["more"]) == (2, False)
        assert sorted(first.json_body["ids"] + second.json_body["ids"]) == sorted(ids)
        assert _present(rt, ids) == set()


def test_purge_without_a_filter_or_with_a_bad_one_is_a_400_and_purges_nothing(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        dead = _dead(rt)
        for body in (
            {},
            {"limit": 10},
            {"name": None},
            [],
            {"name": ""},
            {"failed_before": "yesterday"},
            {"failed_before": 5},
            {"ids": "all"},
            {"ids": [dead], "limit": 0},
            {"ids": [dead], "limit": 501},
            {"ids": [dead], "status": "FAILED"},
        ):
            answer = api.post("/api/v1/dead-letters/purge", body)
            assert answer.status_code == 400, (body, answer.json_body)
            assert answer.json_body["error"]["code"] == "validation_error"
        assert _present(rt, [dead]) == {dead}
        assert _audit(rt) == []


def test_bulk_redrive_is_audited_under_the_key_and_single_redrive_by_its_events(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        ids = [_dead(rt) for _ in range(2)]
        key_id = query(rt.settings.database_url, "SELECT id::text FROM api_keys WHERE tenant = %s", TENANT)[0][0]
        assert api.post("/api/v1/dead-letters/redrive", {"name": "nothing-of-that-name"}).json_body["redriven"] == 0
        assert api.post("/api/v1/dead-letters/redrive", {"ids": [ids[0]]}).json_body["redriven"] == 1
        assert api.post(f"/api/v1/dead-letters/{ids[1]}/redrive", {}).status_code == 200
        actions = _audit(rt)
        assert [(a[0], a[1], a[2]["ids"]) for a in actions] == [(f"key:{key_id}", "dead_letters.redriven", [ids[0]])]
        events = query(
            rt.settings.database_url,
            "SELECT actor FROM task_events WHERE task_id = ANY(%s::uuid[]) AND from_status = 'FAILED'",
            ids,
        )
        assert [e[0] for e in events] == [f"key:{key_id}"] * 2
