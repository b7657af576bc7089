"""The client's audit-log and purge calls against httpx.MockTransport: no network.

What they send (path, query, body), how they read the answer, that the audit
iterator follows cursors to the end, and that a purge is never retried once it may
have reached the server (it deletes)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tasklane_client import AsyncClient, AuditEntry, Client, NetworkError, PurgeResult

BASE = "http://tasklane.test"
KEY = "tl_test-key"


def entry(n: int, action: str = "schedule.created") -> dict[str, Any]:
    return {
        "id": n,
        "at": "2026-01-01T00:00:00+00:00",
        "actor": "key:0b7c",
        "action": action,
        "subject_type": "schedule",
        "subject_id": f"s{n}",
        "details": {"name": f"nightly-{n}"},
    }


def test_audit_follows_cursors_and_sends_the_action_filter() -> None:
    pages = {
        None: {"items": [entry(3), entry(2)], "next_cursor": "c1"},
        "c1": {"items": [entry(1)], "next_cursor": None},
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with Client(BASE, KEY, transport=httpx.MockTransport(handler)) as client:
        got = list(client.audit(action="schedule.created", page_size=2))
    assert [e.id for e in got] == [3, 2, 1]
    assert got[0] == AuditEntry(
        id=3,
        at=datetime(2026, 1, 1, tzinfo=UTC),
        actor="key:0b7c",
        action="schedule.created",
        subject_type="schedule",
        subject_id="s3",
        details={"name": "nightly-3"},
    )
    assert [r.url.path for r in seen] == ["/api/v1/audit"] * 2
    assert dict(seen[0].url.params) == {"action": "schedule.created", "limit": "2"}
    assert dict(seen[1].url.params) == {"action": "schedule.created", "limit": "2", "cursor": "c1"}
    assert all(r.headers["X-API-Key"] == KEY for r in seen)


def test_purge_sends_every_filter_and_reads_the_result() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"purged": 2, "ids": ["a", "b"], "more": True})

    before = datetime(2026, 1, 1, tzinfo=UTC)
    with Client(BASE, KEY, transport=httpx.MockTransport(handler)) as client:
        result = client.purge_dead_letters(ids=["a", "b"], name="fail", failed_before=before, limit=2)
    assert result == PurgeResult(purged=2, ids=["a", "b"], more=True)
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/api/v1/dead-letters/purge")
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "ids": ["a", "b"],
        "name": "fail",
        "failed_before": "2026-01-01T00:00:00+00:00",
        "limit": 2,
    }


def test_purge_without_a_filter_is_refused_before_any_request() -> None:
    seen: list[httpx.Request] = []
    with Client(BASE, KEY, transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200))) as client:
        with pytest.raises(ValueError, match="ids, name or failed_before"):
            client.purge_dead_letters()
        with pytest.raises(ValueError, match="ids, name or failed_before"):
            client.purge_dead_letters(ids=[])
    assert seen == []


def test_purge_is_not_retried_after_it_may_have_reached_the_server() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    client = Client(BASE, KEY, transport=httpx.MockTransport(handler), max_retries=3)
    client._sleep = lambda seconds: None  # type: ignore[method-assign]
    with client, pytest.raises(NetworkError):
        client.purge_dead_letters(name="fail")
    assert len(calls) == 1


def test_async_client_has_the_same_calls() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/audit":
            return httpx.Response(200, json={"items": [entry(1, "dead_letters.purged")], "next_cursor": None})
        return httpx.Response(200, json={"purged": 0, "ids": [], "more": False})

    async def run() -> tuple[list[AuditEntry], PurgeResult]:
        async with AsyncClient(BASE, KEY, transport=httpx.MockTransport(handler)) as client:
            entries = [e async for e in client.audit()]
            return entries, await client.purge_dead_letters(name="fail")

    entries, purged = asyncio.run(run())
    assert [e.action for e in entries] == ["dead_letters.purged"]
    assert purged == PurgeResult(0, [], False)
