"""Schemathesis drives every operation of /openapi.json against a live local stack.

Checks: no 5xx, every response matches the documented status codes, content type
and schema, and the same request without a valid key is refused with a 401.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from chalicelib.api.openapi import spec as build_spec
from chalicelib.tasktypes import load_builtin_task_types
from tests.stack import Stack


def spec() -> dict[str, object]:
    return build_spec(load_builtin_task_types())


DOCUMENT = spec()
schema = schemathesis.openapi.from_dict(DOCUMENT)
# allow_x00=False: PostgreSQL cannot store U+0000, and the API says so with a 400
# (tests/unit/test_validation.py); the fuzzer would otherwise count that as a rejection
# of schema-valid data.
# 8 examples per operation.  The fuzzer runs beside the suite on the same two cores, and
# the machines CI gets differ by more than 2x: on a fast one (2026-12-03 afternoon) a
# whole `make test` took 6.7 minutes with 12 and 6.5 with 20; on round 11's (a CPU about
# 2.4x slower: 2 drainers drained 7,900 tasks/s there against 18,900) the suite alone took
# 10.3 minutes, the fuzzer 5.8 minutes beside it with 20 and 4.2 with 12, and a whole
# `make test` with 12 11.5 minutes.  The
# hostile bodies that matter most are fixed cases in tests/e2e/test_fuzz_hostile.py,
# whatever this number is.
FUZZ_EXAMPLES = 8
schema.config.generation.update(max_examples=FUZZ_EXAMPLES, database="none", allow_x00=False)
# A generated body bigger than TASKLANE_MAX_PAYLOAD_BYTES is refused with the documented
# 413 before it is parsed; that is a rejection too.
schema.config.checks.negative_data_rejection.expected_statuses = [
    *schema.config.checks.negative_data_rejection.expected_statuses,
    "413",
]
API_KEY = {"value": ""}


@schema.auth()
class BootstrapKey:
    """Gives schemathesis the stack's key, so it knows which header authenticates."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return API_KEY["value"]

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "X-API-Key": data}


def _task_bodies(case: schemathesis.Case) -> list[dict[str, object]]:
    """The task bodies a generated submit or batch carries."""
    body = case.body if isinstance(case.body, dict) else {}
    if case.path == "/api/v1/tasks":
        return [body]
    if case.path == "/api/v1/tasks/batch":
        tasks = body.get("tasks") if isinstance(body.get("tasks"), list) else []
        return [t for t in tasks if isinstance(t, dict)]
    return []


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, fuzz_stack: Stack) -> None:
    API_KEY["value"] = fuzz_stack.api_key
    if isinstance(case.query, dict):
        # A cursor is an opaque token the server issued; which strings are valid cannot
        # be said in JSON Schema, so generated ones are dropped (pagination has its own tests).
        case.query.pop("cursor", None)
    excluded = []
    if case.path.startswith("/api/v1/schedules") and case.method in ("POST", "PATCH"):
        # Which strings are valid cron expressions or IANA time zones cannot be said in
        # JSON Schema, so a generated "valid" one is usually refused with a 400.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    if any("expires_at" in t or "unique_for_seconds" in t for t in _task_bodies(case)):
        # Whether a deadline lies ahead (and after run_at), and that unique_for_seconds
        # comes with a unique_key, cannot be said in JSON Schema either.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    if case.method == "POST" and (
        case.path == "/api/v1/workflows" or any("depends_on" in t for t in _task_bodies(case))
    ):
        # Which task ids exist (depends_on) and whether a workflow's "after" names form a
        # DAG of its own steps cannot be said in JSON Schema either: such a 400 is right.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(base_url=fuzz_stack.base_url, excluded_checks=excluded)
    if case.path.startswith("/api/"):
        # Without a valid key nothing succeeds: a documented method is refused with
        # 401; an undeclared one is refused before any authentication (the local dev
        # server answers OPTIONS and HEAD itself, with no body).
        documented = case.method.lower() in DOCUMENT["paths"][case.path]
        for bad in ("", "tl_" + "x" * 43):
            response = case.call(base_url=fuzz_stack.base_url, headers={"X-API-Key": bad})
            if documented:
                # 415 comes first when the Content-Type is wrong (Chalice checks it before any
                # handler), and 413 when Content-Length is above the limit (the server refuses
                # the body unread, before authentication, as API Gateway does with its own limit).
                # A request the HTTP layer cannot frame (a generated empty or malformed
                # Content-Length) is a 400 before authentication too.
                framing = response.status_code == 400 and "Content-Length" in response.text
                assert response.status_code in (401, 413, 415) or framing, (bad, response.status_code, response.text)
            elif case.method.upper() in ("OPTIONS", "HEAD"):
                assert not response.content, (case.method, response.text)
            else:
                assert response.status_code == 405, (case.method, response.status_code, response.text)


def test_served_document_is_the_one_tested(fuzz_stack: Stack) -> None:
    served = fuzz_stack.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == spec()
