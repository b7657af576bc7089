"""The declarations file (Lambda and HTTP task types): what it accepts, and a clear
``ConfigError`` naming file, type and field for everything it does not."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import ConfigError, Settings, TypeLimit
from chalicelib.core.defaults import TaskDefaults
from chalicelib.core.errors import PayloadError
from chalicelib.core.model import Priority
from chalicelib.tasktypes.declarations import (
    DEFAULT_FILES,
    HttpTargetSpec,
    LambdaTargetSpec,
    compile_payload_schema,
    declarations_path,
    parse_declarations,
    read_declarations,
)

RESIZE = {
    "description": "Resizes an image",
    "lambda": {"function": "resize-fn", "qualifier": "live", "permanent_errors": ["ValueError"]},
    "payload_schema": {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}},
    "max_retries": 5,
    "timeout_seconds": 60,
    "priority": "high",
    "limits": {"concurrency": 2, "rate": "10/s", "burst": 4},
}


def _one(spec: dict[str, Any], name: str = "resize") -> Any:
    [declaration] = parse_declarations({"task_types": {name: spec}}, "types.json")
    return declaration


def test_a_full_lambda_declaration_is_read() -> None:
    d = _one(RESIZE)
    assert d.name == "resize" and d.kind == "lambda" and d.description == "Resizes an image"
    assert d.target == LambdaTargetSpec("resize-fn", "live", frozenset({"ValueError"}))
    assert d.defaults == TaskDefaults(5, 60, Priority.HIGH)
    assert d.limits == TypeLimit(2, 10.0, 4)
    assert d.payload_schema == RESIZE["payload_schema"]


def test_a_minimal_http_declaration_gets_the_defaults() -> None:
    d = _one({"http": {"url": "https://crm.example.com/hook"}}, "crm")
    assert d.kind == "http" and d.target == HttpTargetSpec("https://crm.example.com/hook", allow_private=True)
    assert d.defaults == TaskDefaults() and d.limits is None and d.payload_schema is None


def test_lambda_permanent_errors_default_to_tasklanes_own() -> None:
    d = _one({"lambda": {"function": "arn:aws:lambda:us-east-1:123456789012:function:f"}})
    assert d.target.permanent_errors == {"PermanentError", "PayloadError"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, 'exactly one target, "lambda" or "http"'),
        ({"lambda": {"function": "f"}, "http": {"url": "http://x"}}, "exactly one target"),
        ({"lambda": {"function": "f"}, "retries": 3}, "unknown field(s) retries"),
        ({"lambda": {"function": ""}}, "lambda.function must be"),
        ({"lambda": {"function": "f", "alias": "x"}}, "lambda: unknown field(s) alias"),
        ({"lambda": {"function": "f", "permanent_errors": "ValueError"}}, "permanent_errors must be a list"),
        ({"http": {"url": "ftp://x/y"}}, "http.url must be an http:// or https:// URL"),
        ({"http": {"url": "https://x", "allow_private": "yes"}}, "allow_private must be true or false"),
        ({"lambda": {"function": "f"}, "max_retries": 101}, "max_retries must be an integer from 0 to 100"),
        ({"lambda": {"function": "f"}, "timeout_seconds": 0}, "timeout_seconds must be an integer from 1 to 900"),
        ({"lambda": {"function": "f"}, "priority": "urgent"}, "priority must be one of critical, high"),
        ({"lambda": {"function": "f"}, "limits": {"rate": "fast"}}, "rate must look like"),
        ({"lambda": {"function": "f"}, "limits": {"concurrency": -1}}, "limits.concurrency"),
        ({"lambda": {"function": "f"}, "payload_schema": {"type": "objekt"}}, "not a valid JSON Schema"),
        ({"lambda": {"function": "f"}, "payload_schema": []}, "must be a JSON Schema object"),
        ("f", "expected an object"),
    ],
)
def test_mistakes_name_the_file_the_type_and_the_field(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _one(spec, "resize")
    assert "types.json: task type 'resize'" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["", "tasklane.webhook", "has space", "-x", "x" * 101])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"a name is 1-100 letters"):
        _one({"http": {"url": "https://x"}}, name)


@pytest.mark.parametrize("doc", [[], {"types": {}}, {"task_types": []}, {"task_types": {}, "x": 1}])
def test_the_document_shape_is_checked(doc: Any) -> None:
    with pytest.raises(ConfigError, match=r'expected \{"task_types"'):
        parse_declarations(doc, "types.json")


def test_remote_refs_are_refused_at_load_not_fetched() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "https://schemas.example.com/a.json"}}}
    with pytest.raises(ConfigError, match=r"may not \$ref a remote document"):
        compile_payload_schema(schema)


def test_payload_schema_messages_name_the_payload_field() -> None:
    validate = compile_payload_schema(RESIZE["payload_schema"])
    validate({"key": "a.png"})
    with pytest.raises(PayloadError, match=r"payload must contain \['key'\]"):
        validate({})
    with pytest.raises(PayloadError, match=r"payload.key must be string"):
        validate({"key": 3})


def test_the_schema_never_writes_defaults_into_the_payload() -> None:
    validate = compile_payload_schema({"type": "object", "properties": {"size": {"type": "integer", "default": 9}}})
    payload: dict[str, Any] = {}
    validate(payload)
    assert payload == {}


def test_a_configured_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TASKLANE_TASK_TYPES_FILE names .* which is not a file"):
        declarations_path(str(tmp_path / "missing.json"))


def test_an_unreadable_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "types.json"
    path.write_text('{"task_types": {')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read the task type declarations")):
        read_declarations(str(path))


def test_the_file_is_read_from_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"task_types": {"resize": RESIZE}}))
    settings = Settings.from_env({"TASKLANE_TASK_TYPES_FILE": str(path)})
    assert [d.name for d in read_declarations(settings.task_types_file)] == ["resize"]


def test_without_a_setting_the_defaults_are_next_to_app_py_then_vendor() -> None:
    root = Path(__file__).resolve().parents[2]
    assert DEFAULT_FILES == (root / "tasktypes.json", root / "vendor" / "tasktypes.json")
    assert (root / "app.py").is_file()
    if not any(p.is_file() for p in DEFAULT_FILES):
        assert declarations_path(None) is None and read_declarations(None) == []


def test_task_modules_setting_is_a_comma_separated_list_of_module_names() -> None:
    assert Settings.from_env({"TASKLANE_TASK_MODULES": " acme_tasks, acme.billing.tasks ,"}).task_modules == (
        "acme_tasks",
        "acme.billing.tasks",
    )
    assert Settings.from_env({}).task_modules == ()
    with pytest.raises(ConfigError, match=r"not a module name: 'acme/tasks.py'"):
        Settings.from_env({"TASKLANE_TASK_MODULES": "acme/tasks.py"})
    with pytest.raises(ConfigError, match=r"names a module twice"):
        Settings.from_env({"TASKLANE_TASK_MODULES": "a,a"})
