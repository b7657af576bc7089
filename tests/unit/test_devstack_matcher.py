"""The local API server's route matcher remembers answers per URL
(``api_handler.RememberingMatcher``) and answers exactly as chalice's does."""

from __future__ import annotations

import pytest
from chalice.local import RouteMatcher

from tools.devstack.api_handler import RememberingMatcher

ROUTES = ["/", "/api/v1/tasks", "/api/v1/tasks/batch", "/api/v1/tasks/{task_id}", "/api/v1/tasks/{task_id}/cancel"]
URLS = [
    "/",
    "/api/v1/tasks",
    "/api/v1/tasks/",
    "/api/v1/tasks/batch",
    "/api/v1/tasks/abc",
    "/api/v1/tasks/abc/cancel",
    "/api/v1/tasks?limit=2&cursor=&status=QUEUED&status=PENDING",
    "/api/v1/tasks/xyz?x=1",
]


@pytest.mark.parametrize("url", URLS)
def test_it_answers_as_chalice_does_first_time_and_after(url: str) -> None:
    plain, remembering = RouteMatcher(ROUTES), RememberingMatcher(RouteMatcher(ROUTES))
    for _ in range(3):
        assert remembering.match_route(url) == plain.match_route(url)


def test_unknown_paths_are_refused_every_time() -> None:
    remembering = RememberingMatcher(RouteMatcher(ROUTES))
    for _ in range(2):
        with pytest.raises(ValueError, match="No matching route"):
            remembering.match_route("/api/v1/nope/nope/nope")


def test_each_answer_has_parameters_of_its_own() -> None:
    remembering = RememberingMatcher(RouteMatcher(ROUTES))
    first = remembering.match_route("/api/v1/tasks/abc")
    first.captured["task_id"] = "changed"
    assert remembering.match_route("/api/v1/tasks/abc").captured == {"task_id": "abc"}
