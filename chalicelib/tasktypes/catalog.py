"""The task-type registry: task name → executor, validator and payload schema.

Task-type modules import this module (never the ``chalicelib.tasktypes`` package,
whose ``load_builtin_task_types`` imports them: that would be an import cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.core.errors import PayloadError
from chalicelib.core.numbers import as_int
from chalicelib.tasktypes.context import TaskContext

__all__ = ["Executor", "Registered", "Registry", "Validator", "as_int", "registry", "require"]

Validator = Callable[[Any], None]
Executor = Callable[[Any, TaskContext], Any]


@dataclass(frozen=True)
class Registered:
    name: str
    run: Executor
    validate: Validator | None
    description: str
    payload_schema: dict[str, Any]
    internal: bool = False


class Registry:
    """Task name → executor."""

    def __init__(self) -> None:
        self._by_name: dict[str, Registered] = {}

    def task(
        self,
        name: str,
        *,
        validate: Validator | None = None,
        payload_schema: dict[str, Any] | None = None,
        internal: bool = False,
    ) -> Callable[[Executor], Executor]:
        """Register the decorated function as the executor of ``name``.

        ``payload_schema`` (JSON Schema) documents the payload in ``/openapi.json``;
        the API's fuzz test holds it and ``validate`` to the same rules.

        ``validate(payload)`` raises ``PayloadError``; it runs at submit (a 400 for
        the client) and again before each attempt (a permanent failure)."""

        def decorator(fn: Executor) -> Executor:
            if name in self._by_name:
                raise ValueError(f"task {name!r} is registered twice")
            doc = (fn.__doc__ or "").strip().splitlines()
            schema = payload_schema or {"type": "object"}
            self._by_name[name] = Registered(name, fn, validate, doc[0] if doc else "", schema, internal)
            return fn

        return decorator

    def get(self, name: str) -> Registered | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Task names clients may submit (internal ones, such as webhooks, are left out)."""
        return sorted(n for n, r in self._by_name.items() if not r.internal)

    def submittable(self, name: str) -> bool:
        entry = self._by_name.get(name)
        return entry is not None and not entry.internal

    def validate(self, name: str, payload: Any) -> None:
        """Raise ``PayloadError`` when ``payload`` is not valid for ``name``."""
        entry = self._by_name.get(name)
        if entry is not None and entry.validate is not None:
            entry.validate(payload)


registry = Registry()


def require(condition: bool, message: str) -> None:
    """Validator helper: raise ``PayloadError(message)`` unless ``condition``."""
    if not condition:
        raise PayloadError(message)
