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
