"""The OpenAPI document matches the app's routes, both ways."""

from __future__ import annotations

import app
from chalicelib.api.openapi import spec as build_spec
from chalicelib.tasktypes import load_builtin_task_types


def spec() -> dict[str, object]:
    return build_spec(load_builtin_task_types())


def _routes() -> set[tuple[str, str]]:
    return {(path, method.lower()) for path, methods in app.app.routes.items() for method in methods}


def test_every_route_is_documented_and_nothing_else() -> None:
    documented = {(path, method) for path, ops in spec()["paths"].items() for method in ops}
    assert documented == _routes()


def test_every_operation_documents_success_and_errors() -> None:
    for path, ops in spec()["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), (path, method)
            if path.startswith("/api/"):
                assert {"400", "401", "429", "503"} <= codes, (path, method)
                assert op["security"] == [{"ApiKey": []}]
            if "{task_id}" in path:
                assert "404" in codes, (path, method)


def test_references_resolve() -> None:
    doc = spec()
    schemas = doc["components"]["schemas"]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                assert ref.removeprefix("#/components/schemas/") in schemas, ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


def test_the_document_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    validate(spec())  # type: ignore[arg-type]


def test_request_bodies_are_the_validators_schemas() -> None:
    """One source: each documented request body is core.schemas' definition (the
    per-type variants add a const name and the type's payload schema, nothing else)."""
    from chalicelib.core.schemas import REQUESTS

    schemas = spec()["components"]["schemas"]  # type: ignore[index]
    published = {k: v for k, v in schemas["BatchRequest"].items() if k not in ("if", "then")}
    batch = published["properties"]["batch"]  # its on_complete: BatchFollowUp by task name
    assert batch["properties"]["on_complete"] == {"$ref": "#/components/schemas/BatchFollowUp"}
    assert {**batch["properties"], "on_complete": REQUESTS["BatchFollowUp"]} == REQUESTS["BatchRequest"]["properties"][
        "batch"
    ]["properties"]
    published["properties"] = {**published["properties"], "batch": REQUESTS["BatchRequest"]["properties"]["batch"]}
    assert published == REQUESTS["BatchRequest"]
    assert schemas["Redrive"] == REQUESTS["Redrive"]
    for kind in ("TaskSubmission", "ScheduleTask"):
        variants = [schemas[ref["$ref"].rsplit("/", 1)[1]] for ref in schemas[kind]["oneOf"]]
        assert len(variants) == len(load_builtin_task_types().names())
        for variant in variants:
            source = REQUESTS[kind]["properties"]
            for field, definition in variant["properties"].items():
                if field not in ("name", "payload"):  # a type may set its own defaults
                    assert {k: v for k, v in definition.items() if k != "default"} == {
                        k: v for k, v in source[field].items() if k != "default"
                    }, (kind, field)
            assert variant["additionalProperties"] is False
    for name in ("ScheduleSubmission", "ScheduleUpdate"):
        assert set(schemas[name]["properties"]) == set(REQUESTS[name]["properties"])


def test_no_oneof_branch_holds_a_boolean_const() -> None:
    """openapi-python-client 0.29 emits a syntax error for ``const: false`` in a oneOf."""
    text = repr(spec())
    assert "'const': False" not in text and "'const': True" not in text
