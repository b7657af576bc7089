"""Pause, resume and cancel by filter over HTTP (Chalice's test client on the real app):
tenant-scoped under the caller's key, visible in task-types, stats and /metrics, every
mistake a 4xx in the error shape."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from chalicelib.container import Container
from chalicelib.core.control import GLOBAL
from chalicelib.observability import metrics
from chalicelib.services import control
from chalicelib.services.submit import submit_many
from tests.helpers import query, request
from tests.integration.app_client import api_for

TENANT = "ctl-api"


def _gauges(rt: Container) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render(rt.store, rt.queue)):
        if family.name in ("tasklane_paused_task_types", "tasklane_paused_tasks"):
            for s in family.samples:
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_pause_and_resume_over_http_are_tenant_scoped_visible_and_audited(rt: Container) -> None:
    submit_many(rt, TENANT, [request("sleep", {"seconds": 0}) for _ in range(3)])
    with api_for(rt, TENANT) as api:
        paused = api.post("/api/v1/task-types/sleep/pause", {})
        assert paused.status_code == 200, paused.json_body
        body = paused.json_body
        assert (body["name"], body["scope"], body["paused"], body["changed"], body["moved"]) == (
            "sleep",
            "tenant",
            True,
            True,
            3,
        )
        assert body["paused_by"].startswith("key:")
        assert api.post("/api/v1/task-types/sleep/pause", {}).json_body["changed"] is False

        types = {t["name"]: t for t in api.get("/api/v1/task-types").json_body["task_types"]}
        assert [p["scope"] for p in types["sleep"]["pauses"]] == ["tenant"] and types["noop"]["pauses"] == []
        assert [p["name"] for p in api.get("/api/v1/stats").json_body["paused"]] == ["sleep"]
        gauges = _gauges(rt)
        assert gauges[("tasklane_paused_task_types", (("scope", "tenant"), ("task_name", "sleep")))] == 1.0
        assert gauges[("tasklane_paused_tasks", (("task_name", "sleep"),))] == 3.0

        control.pause(rt, GLOBAL, "sleep", actor="cli:ops")
        resumed = api.post("/api/v1/task-types/sleep/resume", {}).json_body
        assert (resumed["changed"], resumed["paused"], resumed["requeued"]) == (True, True, 0)
        assert api.post("/api/v1/task-types/sleep/resume", {}).json_body["changed"] is False
        control.resume(rt, GLOBAL, "sleep", actor="cli:ops")
        assert _gauges(rt) == {}

        missing = api.post("/api/v1/task-types/no-such-type/pause", {})
        assert missing.status_code == 404 and missing.json_body["error"]["code"] == "not_found"
        assert api.post("/api/v1/task-types/sleep/pause?x=1", {}).status_code == 400
    actions = query(rt.settings.database_url, "SELECT action FROM audit_log WHERE tenant = %s ORDER BY id", TENANT)
    assert [a for (a,) in actions if a.startswith("task_type.")] == ["task_type.paused", "task_type.resumed"]


def test_cancel_by_filter_over_http_answers_counts_and_refuses_bad_filters(rt: Container) -> None:
    ids = [s.task.id for s in submit_many(rt, TENANT, [request("noop", delay_seconds=600) for _ in range(3)])]  # type: ignore[union-attr]
    with api_for(rt, TENANT) as api:
        for body in (
            {},
            {"limit": 5},
            {"status": "COMPLETED"},
            {"status": "queued"},
            {"name": ""},
            {"priority": "urgent"},
            {"created_before": "yesterday"},
            {"name": "noop", "limit": 0},
            {"name": "noop", "limit": 501},
            {"name": "noop", "ids": ids},
            [],
        ):
            answer = api.post("/api/v1/tasks/cancel", body)
            assert answer.status_code == 400, (body, answer.json_body)
            assert answer.json_body["error"]["code"] == "validation_error"
        first = api.post("/api/v1/tasks/cancel", {"name": "noop", "status": "PENDING", "limit": 2})
        assert first.status_code == 200, first.json_body
        assert (first.json_body["cancelled"], first.json_body["more"]) == (2, True)
        rest = api.post("/api/v1/tasks/cancel", {"created_before": "2999-01-01T00:00:00Z"}).json_body
        assert rest == {"cancelled": 1, "cancel_requested": 0, "ids": rest["ids"], "requested_ids": [], "more": False}
        assert sorted(first.json_body["ids"] + rest["ids"]) == sorted(ids)
