"""The HTTP boundary in-process (chalice.test.Client over the real app, PostgreSQL and
Redis): the one JSON body rule (415), the error boundary on authenticated routes
(rate-limit headers on errors too), and the shapes the presenters give the routes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.container import Container
from tests.integration.app_client import api_for
from tests.state import clean, fast_settings

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def api(database_url: str, redis_url: str) -> Iterator[tuple[Client, dict[str, str]]]:
    """The app serving a container built from test settings, and a key of a tenant of
    its own (schedule names are unique per tenant)."""
    clean(database_url, redis_url)
    rt = Container.build(fast_settings(database_url, redis_url))
    try:
        with api_for(rt, f"http-{uuid.uuid4()}") as api:
            yield api.client, {"X-API-Key": api.key}
    finally:
        rt.close()


def _schedule_id(client: Client, key: dict[str, str]) -> str:
    body = {"name": "s", "cron": "0 9 * * *", "task": {"name": "noop"}}
    r = client.http.post("/api/v1/schedules", headers={**key, **JSON}, body=json.dumps(body))
    assert r.status_code == 201, r.body
    return str(json.loads(r.body)["id"])


BODY_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/v1/tasks", {"name": "noop"}),
    ("POST", "/api/v1/tasks/batch", {"tasks": [{"name": "noop"}]}),
    ("POST", "/api/v1/dead-letters/redrive", {"name": "noop"}),
    ("POST", "/api/v1/schedules", {"name": "n", "cron": "0 9 * * *", "task": {"name": "noop"}}),
    ("PATCH", "/api/v1/schedules/{id}", {"enabled": False}),
]


@pytest.mark.parametrize(("method", "path", "body"), BODY_ROUTES)
@pytest.mark.parametrize("content_type", [None, "text/plain", "*/*", "text/plain, application/json"])
def test_a_body_without_json_content_type_is_415_on_every_route(
    api: tuple[Client, dict[str, str]], method: str, path: str, body: dict[str, Any], content_type: str | None
) -> None:
    client, key = api
    path = path.replace("{id}", _schedule_id(client, key)) if "{id}" in path else path
    headers = {**key, **({"Content-Type": content_type} if content_type else {})}
    r = client.http.request(method, path, headers=headers, body=json.dumps(body).encode())
    assert r.status_code == 415, (method, path, content_type, r.body)
    error = json.loads(r.body)["error"]
    assert error["code"] == "unsupported_media_type" and set(error) == {"code", "message"}
    assert r.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(("method", "path", "body"), BODY_ROUTES)
def test_json_with_a_charset_is_accepted_on_every_route(
    api: tuple[Client, dict[str, str]], method: str, path: str, body: dict[str, Any]
) -> None:
    client, key = api
    path = path.replace("{id}", _schedule_id(client, key)) if "{id}" in path else path
    headers = {**key, "Content-Type": "application/json; charset=utf-8"}
    r = client.http.request(method, path, headers=headers, body=json.dumps(body).encode())
    assert r.status_code in (200, 201), (method, path, r.body)


def test_routes_without_a_body_need_no_content_type(api: tuple[Client, dict[str, str]]) -> None:
    client, key = api
    r = client.http.post(
        "/api/v1/tasks", headers={**key, **JSON}, body=json.dumps({"name": "noop", "delay_seconds": 60})
    )
    task_id = json.loads(r.body)["id"]
    r = client.http.post(f"/api/v1/tasks/{task_id}/cancel", headers=key)
    assert r.status_code == 200 and json.loads(r.body)["status"] == "CANCELLED"
    r = client.http.post(f"/api/v1/tasks/{task_id}/cancel", headers=key)
    assert r.status_code == 409 and json.loads(r.body)["error"]["details"] == {"status": "CANCELLED"}
    assert client.http.post("/api/v1/webhook-secret/rotate", headers=key).status_code == 200


def test_errors_of_authenticated_routes_carry_the_rate_limit_headers(api: tuple[Client, dict[str, str]]) -> None:
    client, key = api
    r = client.http.post("/api/v1/tasks", headers=key, body=b"{}")
    assert r.status_code == 415 and "RateLimit-Remaining" in r.headers
    r = client.http.get("/api/v1/tasks?cursor=Z2FyYmFnZQ", headers=key)
    assert r.status_code == 400 and "RateLimit-Remaining" in r.headers
    assert json.loads(r.body)["error"]["details"] == {"field": "cursor"}
    r = client.http.get("/api/v1/stats?since=1", headers=key)
    assert r.status_code == 400 and "RateLimit-Remaining" in r.headers
    r = client.http.post("/api/v1/tasks", headers=JSON, body=b"{}")
    assert r.status_code == 401 and "RateLimit-Remaining" not in r.headers


def test_pages_link_with_cursors_and_batches_pick_their_status(api: tuple[Client, dict[str, str]]) -> None:
    client, key = api
    batch = {"tasks": [{"name": "noop"}, {"name": "noop"}, {"name": "noop"}]}
    r = client.http.post("/api/v1/tasks/batch", headers={**key, **JSON}, body=json.dumps(batch))
    assert r.status_code == 201 and json.loads(r.body)["created"] == 3
    batch["tasks"].append({"name": "no-such-task"})
    r = client.http.post("/api/v1/tasks/batch", headers={**key, **JSON}, body=json.dumps(batch))
    body = json.loads(r.body)
    assert r.status_code == 200 and [x["status"] for x in body["results"]] == [201, 201, 201, 400]
    seen: list[str] = []
    path = "/api/v1/tasks?limit=4"
    while True:
        page = json.loads(client.http.get(path, headers=key).body)
        seen += [t["id"] for t in page["items"]]
        if page["next_cursor"] is None:
            break
        path = f"/api/v1/tasks?limit=4&cursor={page['next_cursor']}"
    assert len(seen) == len(set(seen)) == 6
    r = client.http.get(f"/api/v1/tasks/{seen[0]}", headers=key)
    assert r.status_code == 200 and json.loads(r.body)["errors"] == []
    events = json.loads(client.http.get(f"/api/v1/tasks/{seen[0]}/events", headers=key).body)
    assert events["task_id"] == seen[0] and events["events"][0]["to_status"] == "QUEUED"


def _task_id(client: Client, key: dict[str, str]) -> str:
    r = client.http.post("/api/v1/tasks", headers={**key, **JSON}, body=json.dumps({"name": "noop"}))
    assert r.status_code == 201, r.body
    return str(json.loads(r.body)["id"])


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/tasks/{task}",
        "/api/v1/tasks/{task}/events",
        "/api/v1/schedules",
        "/api/v1/schedules/{schedule}",
        "/api/v1/webhook-secret",
        "/api/v1/task-types",
    ],
)
def test_a_query_parameter_a_route_does_not_take_is_a_400_on_every_get(
    api: tuple[Client, dict[str, str]], path: str
) -> None:
    """As on the list routes: a parameter silently ignored reads as if it had worked
    (``?limit=1`` on a task's events returned them all)."""
    client, key = api
    path = path.replace("{task}", _task_id(client, key)).replace("{schedule}", _schedule_id(client, key))
    assert client.http.get(path, headers=key).status_code == 200
    r = client.http.get(f"{path}?limit=1", headers=key)
    assert r.status_code == 400, r.body
    assert "limit" in json.loads(r.body)["error"]["message"]


@pytest.mark.parametrize("limit", ["5_0", "+5", "%205%20", "%D9%A5", "1e1", "99999999999999999999999"])
def test_a_limit_must_be_ascii_digits(api: tuple[Client, dict[str, str]], limit: str) -> None:
    client, key = api
    r = client.http.get(f"/api/v1/tasks?limit={limit}", headers=key)
    assert r.status_code == 400, (limit, r.body)
    assert client.http.get("/api/v1/tasks?limit=5", headers=key).status_code == 200


@pytest.mark.parametrize("field", [None, 5, ["k"]])
def test_an_idempotency_key_field_of_the_wrong_type_is_a_400_beside_the_header(
    api: tuple[Client, dict[str, str]], field: Any
) -> None:
    client, key = api
    body = json.dumps({"name": "noop", "idempotency_key": field})
    r = client.http.post("/api/v1/tasks", headers={**key, **JSON, "Idempotency-Key": "k"}, body=body)
    assert r.status_code == 400, r.body
    assert "idempotency_key" in json.loads(r.body)["error"]["message"]


def test_a_workflow_step_name_with_a_final_newline_is_refused(api: tuple[Client, dict[str, str]]) -> None:
    client, key = api
    body = json.dumps({"steps": {"a\n": {"name": "noop"}}})
    r = client.http.post("/api/v1/workflows", headers={**key, **JSON}, body=body)
    assert r.status_code == 400, r.body
    assert "step names must be" in json.loads(r.body)["error"]["message"]


@pytest.mark.parametrize(
    "url", ["http://-/", "http://../", "http://./", "http://a..b/", "http://a-.example/", "http://1.1.1.1:0/"]
)
def test_a_callback_url_whose_host_or_port_cannot_be_connected_to_is_refused(
    api: tuple[Client, dict[str, str]], url: str
) -> None:
    client, key = api
    body = json.dumps({"name": "noop", "callback_url": url})
    r = client.http.post("/api/v1/tasks", headers={**key, **JSON}, body=body)
    assert r.status_code == 400, (url, r.body)


def test_a_cron_is_kept_with_its_fields_one_space_apart(api: tuple[Client, dict[str, str]]) -> None:
    client, key = api
    body = {"name": "tabs", "cron": "0\t9  *\n* *", "task": {"name": "noop"}}
    r = client.http.post("/api/v1/schedules", headers={**key, **JSON}, body=json.dumps(body))
    assert r.status_code == 201, r.body
    assert json.loads(r.body)["cron"] == "0 9 * * *"
