"""The declarations file: task types whose work runs in a team's own Lambda function
or behind its own HTTP endpoint, declared in one JSON file (README, "Declaring
Lambda and HTTP task types")::

    {"task_types": {
        "resize-image": {
            "description": "Resizes an uploaded image",
            "lambda": {"function": "arn:aws:lambda:eu-west-1:123456789012:function:resize",
                       "qualifier": "live", "permanent_errors": ["ValueError", "PermanentError"]},
            "payload_schema": {"type": "object", "required": ["key"],
                               "properties": {"key": {"type": "string"}}},
            "max_retries": 5, "timeout_seconds": 120, "priority": "high",
            "limits": {"concurrency": 4, "rate": "20/s"}},
        "crm-sync": {"http": {"url": "https://crm.internal.example/tasklane"}}}}

Where the file is: ``TASKLANE_TASK_TYPES_FILE`` (absolute, or relative to the
project directory, the one holding ``app.py``); else ``tasktypes.json`` next to
``app.py`` (where Chalice puts ``vendor/tasktypes.json`` in the deployment
package), else ``vendor/tasktypes.json`` (the same file in the source tree);
else there are no declared task types.  Every mistake is a ``ConfigError`` that
names the file, the task type and the field: the process refuses to start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.config import ConfigError, TypeLimit, parse_type_limit
from chalicelib.core.defaults import NO_DEFAULTS, TaskDefaults
from chalicelib.core.errors import PayloadError

# The project directory: app.py's, both in the source tree and in the Lambda package.
PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_FILES = (PROJECT_DIR / "tasktypes.json", PROJECT_DIR / "vendor" / "tasktypes.json")

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
DEFAULT_PERMANENT_ERRORS = ("PermanentError", "PayloadError")
_TYPE_FIELDS = {
    "description",
    "lambda",
    "http",
    "payload_schema",
    "max_retries",
    "timeout_seconds",
    "priority",
    "limits",
}


@dataclass(frozen=True)
class LambdaTargetSpec:
    """Invoke ``function`` (a name or ARN; ``qualifier``: a version or alias) per attempt."""

    function: str
    qualifier: str | None = None
    permanent_errors: frozenset[str] = frozenset(DEFAULT_PERMANENT_ERRORS)


@dataclass(frozen=True)
class HttpTargetSpec:
    """POST each attempt's payload to ``url``, signed with the tenant's webhook secret."""

    url: str
    # The URL comes from the operator, not from a client, so private addresses (a
    # service inside the VPC) are allowed unless refused here; link-local and
    # metadata addresses are always refused (adapters/outbound_http.py).
    allow_private: bool = True


@dataclass(frozen=True)
class Declaration:
    """One declared task type."""

    name: str
    target: LambdaTargetSpec | HttpTargetSpec
    description: str = ""
    payload_schema: dict[str, Any] | None = None
    defaults: TaskDefaults = NO_DEFAULTS
    limits: TypeLimit | None = None

    @property
    def kind(self) -> str:
        return "lambda" if isinstance(self.target, LambdaTargetSpec) else "http"


def declarations_path(configured: str | None) -> Path | None:
    """The file to read: the configured one (which must exist), else the first default present."""
    if configured:
        path = Path(configured)
        path = path if path.is_absolute() else PROJECT_DIR / path
        if not path.is_file():
            raise ConfigError(f"TASKLANE_TASK_TYPES_FILE names {str(path)!r}, which is not a file")
        return path
    return next((p for p in DEFAULT_FILES if p.is_file()), None)


def read_declarations(configured: str | None) -> list[Declaration]:
    """The declared task types (none when there is no file)."""
    path = declarations_path(configured)
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the task type declarations: {exc}") from None
    return parse_declarations(data, str(path))


def parse_declarations(data: Any, source: str) -> list[Declaration]:
    """Check the whole document; ``source`` prefixes every message."""
    if not isinstance(data, dict) or set(data) != {"task_types"} or not isinstance(data["task_types"], dict):
        raise ConfigError(f'{source}: expected {{"task_types": {{"<name>": {{...}}, ...}}}}')
    return [_declaration(name, spec, f"{source}: task type {name!r}") for name, spec in data["task_types"].items()]


def _declaration(name: str, spec: Any, where: str) -> Declaration:
    if not NAME_PATTERN.fullmatch(name) or name.startswith("tasklane."):
        raise ConfigError(
            f"{where}: a name is 1-100 letters, digits and . _ : - (starting with a letter or digit),"
            " and tasklane.* is reserved"
        )
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected an object")
    unknown = sorted(set(spec) - _TYPE_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TYPE_FIELDS))}")
    if ("lambda" in spec) == ("http" in spec):
        raise ConfigError(f'{where}: give exactly one target, "lambda" or "http"')
    target = _lambda_target(spec["lambda"], where) if "lambda" in spec else _http_target(spec["http"], where)
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    schema = spec.get("payload_schema")
    if schema is not None:
        compile_payload_schema(schema, where)  # refuse a broken schema now, not at the first submit
    try:
        defaults = TaskDefaults.checked(
            max_retries=spec.get("max_retries"),
            timeout_seconds=spec.get("timeout_seconds"),
            priority=spec.get("priority"),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    limits = parse_type_limit(spec["limits"], f"{where}: limits") if "limits" in spec else None
    return Declaration(name, target, description, schema, defaults, limits)


def _lambda_target(spec: Any, where: str) -> LambdaTargetSpec:
    where = f"{where}: lambda"
    _fields(spec, {"function", "qualifier", "permanent_errors"}, where)
    function = spec.get("function")
    if not isinstance(function, str) or not function.strip():
        raise ConfigError(f"{where}.function must be the function's name or ARN")
    qualifier = spec.get("qualifier")
    if qualifier is not None and (not isinstance(qualifier, str) or not qualifier.strip()):
        raise ConfigError(f"{where}.qualifier must be a version or alias name")
    errors = spec.get("permanent_errors", list(DEFAULT_PERMANENT_ERRORS))
    if not isinstance(errors, list) or not all(isinstance(e, str) and e for e in errors):
        raise ConfigError(f"{where}.permanent_errors must be a list of error type names")
    return LambdaTargetSpec(function.strip(), qualifier, frozenset(errors))


def _http_target(spec: Any, where: str) -> HttpTargetSpec:
    where = f"{where}: http"
    _fields(spec, {"url", "allow_private"}, where)
    url = spec.get("url")
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url):
        raise ConfigError(f"{where}.url must be an http:// or https:// URL")
    allow_private = spec.get("allow_private", True)
    if not isinstance(allow_private, bool):
        raise ConfigError(f"{where}.allow_private must be true or false")
    return HttpTargetSpec(url, allow_private)


def _fields(spec: Any, allowed: set[str], where: str) -> None:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected an object")
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _refuse_remote_ref(uri: str) -> Any:
    raise ConfigError(f"payload_schema may not $ref a remote document ({uri}); inline it")


_NO_REMOTE_REFS = {scheme: _refuse_remote_ref for scheme in ("http", "https", "ftp", "file")}


def compile_payload_schema(schema: Any, where: str = "payload_schema") -> Callable[[Any], None]:
    """A validator for ``schema`` (JSON Schema, drafts 4 to 7) raising ``PayloadError``
    with the failing field's path, e.g. ``payload.size must be bigger than or equal to 1``."""
    import fastjsonschema

    if not isinstance(schema, dict):
        raise ConfigError(f"{where}: payload_schema must be a JSON Schema object")
    try:
        # No remote $ref (the compiler would fetch it) and no defaults written into
        # the client's payload: the schema only judges.
        check = fastjsonschema.compile(schema, handlers=_NO_REMOTE_REFS, use_default=False)
    except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: payload_schema is not a valid JSON Schema: {exc}") from None

    def validate(payload: Any) -> None:
        try:
            check(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise PayloadError(re.sub(r"^data\b", "payload", exc.message)) from None

    return validate
