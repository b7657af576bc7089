"""The API's one error boundary, without I/O: what ``guarded`` answers, and that every
route of the app runs inside it (authenticated or not)."""

from __future__ import annotations

import json

import pytest
from chalice.app import Response

from chalicelib.api.responses import GUARDED, guarded, json_response
from chalicelib.core.errors import NotFoundError, RateLimitedError, UnavailableError


def test_every_route_runs_inside_the_boundary() -> None:
    from app import app

    routes = [(path, method, entry.view_function) for path, by in app.routes.items() for method, entry in by.items()]
    assert len(routes) > 20
    unguarded = [(path, method) for path, method, view in routes if not getattr(view, GUARDED, False)]
    assert unguarded == []


def test_a_tasklane_error_is_its_status_code_and_json_body() -> None:
    def missing() -> Response:
        raise NotFoundError("no task x", details={"id": "x"})

    r = guarded(missing)
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    assert json.loads(r.body) == {"error": {"code": "not_found", "message": "no task x", "details": {"id": "x"}}}


def test_error_headers_are_kept() -> None:
    def limited() -> Response:
        raise RateLimitedError("slow down", headers={"Retry-After": "3"})

    r = guarded(limited)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert "details" not in json.loads(r.body)["error"]


@pytest.mark.parametrize("exc", [RuntimeError("secret detail"), RecursionError(), KeyError("k")])
def test_anything_else_is_a_500_that_leaks_nothing(exc: Exception) -> None:
    def broken() -> Response:
        raise exc

    r = guarded(broken)
    assert r.status_code == 500
    assert json.loads(r.body) == {"error": {"code": "internal_error", "message": "internal error; it has been logged"}}


def test_an_unavailable_dependency_is_a_503_and_success_passes_through() -> None:
    def down() -> Response:
        raise UnavailableError("PostgreSQL is unreachable")

    assert guarded(down).status_code == 503
    ok = json_response({"a": 1}, 201)
    assert guarded(lambda: ok) is ok
