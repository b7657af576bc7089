"""Request bodies checked against their JSON Schema (``chalicelib.core.schemas``),
with messages that name the field and say what is allowed.

The schemas are compiled with fastjsonschema (generated Python, a few µs a body)
on first use, not at import: a cold start that never validates a body (the drain
and sweep functions, ``/health``) does not pay for the import or the compile.
fastjsonschema stops at the first error; its message ("data.x must be smaller
than or equal to 100") is rewritten from the failing rule and the schema itself,
so every message stays in step with the document.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chalicelib.core.errors import ValidationError
from chalicelib.core.schemas import REQUESTS

_compiled: dict[str, Callable[[Any], Any]] = {}
_lock = threading.Lock()


def _validator(name: str) -> Callable[[Any], Any]:
    fn = _compiled.get(name)
    if fn is None:
        import fastjsonschema  # lazily: see the module docstring

        with _lock:
            # run_at is parsed afterwards with a message that shows the accepted form;
            # fastjsonschema's own date-time check would refuse a documented form (no offset).
            fn = fastjsonschema.compile(REQUESTS[name], formats={"date-time": lambda _: True}, use_default=False)
            _compiled[name] = fn
    return fn


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:45]}... ({len(text)} chars)"


def describe(schema: dict[str, Any]) -> str:
    """What a schema allows, in words: "an integer from 0 to 100"."""
    if "title" in schema:
        return str(schema["title"])
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if kind in ("integer", "number"):
        word = "an integer" if kind == "integer" else "a number"
        return f"{word} from {lo} to {hi}" if lo is not None and hi is not None else word
    if kind == "string":
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if schema.get("pattern") == r"\S":
            return f"a non-empty string of at most {hi} characters"
        return f"a string of {lo} to {hi} characters" if lo else f"a string of at most {hi} characters"
    if kind == "array":
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        of = describe(schema.get("items", {}))
        return f"a list of {lo} to {hi} items, each {of}" if lo else f"a list of at most {hi} items, each {of}"
    return {"boolean": "a boolean (true or false)", "object": "a JSON object"}.get(str(kind), "valid")


def _at(schema: dict[str, Any], path: list[Any]) -> dict[str, Any]:
    """The sub-schema at a data path (the schemas here use no $ref)."""
    for part in path[1:]:  # array indexes come as strings of digits
        items = schema.get("items") if str(part).isdigit() else None
        schema = items if items is not None else schema.get("properties", {}).get(part, {})
    return schema


def check_object(body: dict[str, Any], schema: dict[str, Any], where: str = "") -> None:
    """Unknown fields, explicit nulls and missing fields, each listed at once (a typo
    such as ``delay`` for ``delay_seconds`` must not silently change what runs)."""
    allowed = schema["properties"]
    missing = [k for k in schema.get("required", ()) if k not in body]
    if not missing and body.keys() <= allowed.keys() and None not in body.values():
        return  # the common case, without building the sets and lists below
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValidationError(
            f"{where}unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            details={"fields": unknown},
        )
    nulls = sorted(k for k, v in body.items() if v is None)
    if nulls:
        raise ValidationError(
            f"{where}field(s) {', '.join(nulls)} may not be null; leave a field out to get its default",
            details={"fields": nulls},
        )
    if missing:
        raise ValidationError(f"{where}missing field(s) {', '.join(missing)}", details={"fields": missing})


def validate(name: str, body: Any, *, what: str = "the request body", where: str = "") -> dict[str, Any]:
    """``body`` checked against the request schema ``name``; returns it as a dict.

    ``where`` prefixes every message (``tasks[3]: ``)."""
    schema = REQUESTS[name]
    if not isinstance(body, dict):
        hint = f"; {schema['description']}" if "description" in schema else ""
        raise ValidationError(f"{where}{what} must be a JSON object{hint}")
    check_object(body, schema, where)
    import fastjsonschema

    try:
        _validator(name)(body)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _translate(schema, exc, where) from None
    return body


def _translate(root: dict[str, Any], exc: Any, where: str) -> ValidationError:
    field = str(exc.name).removeprefix("data").lstrip(".")  # "tasks[0].name"
    schema = _at(root, list(exc.path or ["data"]))
    value = exc.value
    if isinstance(value, dict) and schema.get("type") == "object" and "properties" in schema:
        prefix = f"{where}{field}: " if field else where
        check_object(value, schema, prefix)  # a nested object: the same listing as at the top
    if value is None and field:
        return ValidationError(
            f"{where}{field} may not be null; leave a field out to get its default", details={"field": field}
        )
    if exc.rule == "anyOf" and "anyOf" in schema:
        options = " or ".join(", ".join(f'"{f}"' for f in a["required"]) for a in schema["anyOf"])
        return ValidationError(f"{where}give {options}; {schema.get('description', '')}".rstrip("; "))
    return ValidationError(
        f"{where}{field or what_of(schema)} must be {describe(schema)}; got {_shown(value)}",
        details={"field": field} if field else {},
    )


def what_of(schema: dict[str, Any]) -> str:
    return "the request body" if schema.get("type") == "object" else "the value"
