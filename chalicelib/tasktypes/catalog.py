"""The task-type registry: task name → executor, validator and payload schema.

Task-type modules import this module (never the ``chalicelib.tasktypes`` package,
whose ``load_builtin_task_types`` imports them: that would be an import cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.config import ConfigError, TypeLimit, parse_type_limit
from chalicelib.core.defaults import NO_DEFAULTS, TaskDefaults
from chalicelib.core.errors import PayloadError
from chalicelib.core.numbers import as_int
from chalicelib.tasktypes.context import TaskContext

__all__ = [
    "Executor",
    "Registered",
    "Registry",
    "TaskTypeClash",
    "Validator",
    "as_int",
    "registry",
    "require",
]

Validator = Callable[[Any], None]
Executor = Callable[[Any, TaskContext], Any]


class TaskTypeClash(ValueError):
    """A task name is registered twice (two modules, a module and a built-in, or a
    declaration and either)."""


@dataclass(frozen=True)
class Registered:
    """One task type: how it runs, how its payload is checked, what it defaults to."""

    name: str
    run: Executor
    validate: Validator | None
    description: str
    payload_schema: dict[str, Any]
    internal: bool = False  # Tasklane's own (webhooks): clients cannot submit it
    defaults: TaskDefaults = NO_DEFAULTS
    limits: TypeLimit | None = None  # TASKLANE_TASK_LIMITS overrides it
    target: str = "python"  # python | lambda | http: where its work runs
    # Runs in the drainer even in executor mode "lambda" (declared targets: another
    # hop would add nothing, and the HTTP target needs the tenant's webhook secret).
    inline: bool = False
    module: str | None = None  # who registered it; None for a declared type


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
        max_retries: int | None = None,
        timeout_seconds: int | None = None,
        priority: str | None = None,
        limits: Mapping[str, Any] | TypeLimit | None = None,
    ) -> Callable[[Executor], Executor]:
        """Register the decorated function as the executor of ``name``.

        ``payload_schema`` (JSON Schema) documents the payload in ``/openapi.json``;
        the API's fuzz test holds it and ``validate`` to the same rules.

        ``validate(payload)`` raises ``PayloadError``; it runs at submit (a 400 for
        the client) and again before each attempt (a permanent failure).

        ``max_retries``, ``timeout_seconds`` and ``priority`` are what a submission
        gets when it does not say; ``limits`` (``{"concurrency": 2, "rate": "10/s",
        "burst": 5}``) caps the type at claim time, as ``TASKLANE_TASK_LIMITS`` does."""
        try:
            defaults = TaskDefaults.checked(max_retries=max_retries, timeout_seconds=timeout_seconds, priority=priority)
            limit = (
                limits if isinstance(limits, TypeLimit) or limits is None else parse_type_limit(dict(limits), "limits")
            )
        except (ValueError, ConfigError) as exc:
            raise ValueError(f"task {name!r}: {exc}") from None

        def decorator(fn: Executor) -> Executor:
            doc = (fn.__doc__ or "").strip().splitlines()
            self.add(
                Registered(
                    name,
                    fn,
                    validate,
                    doc[0] if doc else "",
                    payload_schema or {"type": "object"},
                    internal,
                    defaults=defaults,
                    limits=limit,
                    module=getattr(fn, "__module__", None),
                )
            )
            return fn

        return decorator

    def add(self, entry: Registered) -> None:
        """Register ``entry``; a name already taken is a ``TaskTypeClash``."""
        existing = self._by_name.get(entry.name)
        if existing is not None:
            by = existing.module or "the task type declarations"
            raise TaskTypeClash(f"task {entry.name!r} is already registered by {by}; choose another name")
        self._by_name[entry.name] = entry

    def with_entries(self, entries: Iterable[Registered]) -> Registry:
        """A new registry: this one's task types plus ``entries`` (this one is unchanged)."""
        extended = Registry()
        extended._by_name = dict(self._by_name)
        for entry in entries:
            extended.add(entry)
        return extended

    def from_module(self, module: str) -> list[str]:
        """The task names registered by functions of ``module`` or its submodules."""
        inside = f"{module}."
        return sorted(n for n, r in self._by_name.items() if r.module == module or (r.module or "").startswith(inside))

    def limits(self) -> dict[str, TypeLimit]:
        """The task types' own limits (before ``TASKLANE_TASK_LIMITS`` overrides them)."""
        return {n: r.limits for n, r in self._by_name.items() if r.limits is not None}

    def get(self, name: str) -> Registered | None:
        return self._by_name.get(name)

    def registered(self) -> set[str]:
        """Every registered name, internal ones included."""
        return set(self._by_name)

    def names(self) -> list[str]:
        """Task names clients may submit (internal ones, such as webhooks, are left out)."""
        return sorted(n for n, r in self._by_name.items() if not r.internal)

    def submittable(self, name: str) -> bool:
        entry = self._by_name.get(name)
        return entry is not None and not entry.internal

    def defaults(self, name: str) -> TaskDefaults:
        """What a submission of ``name`` gets when it does not say (see ``core.defaults``)."""
        entry = self._by_name.get(name)
        return entry.defaults if entry is not None else NO_DEFAULTS

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
