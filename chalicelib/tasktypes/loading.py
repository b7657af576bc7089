"""Every task type a process knows: the built-ins, a team's Python modules
(``TASKLANE_TASK_MODULES``) and the declared Lambda and HTTP targets
(``TASKLANE_TASK_TYPES_FILE``, see ``declarations``).

A team adds task types without forking Tasklane: its modules register with the same
decorator as the built-ins (``@registry.task(...)``) and are imported by name from
the Python path (``PYTHONPATH`` locally, ``vendor/`` or ``requirements.txt`` in the
deployment package).  Nothing is skipped quietly: a module that does not import,
a name that clashes with another task type, or a broken declaration raises
``TaskTypesError`` and the process does not start.
"""

from __future__ import annotations

import importlib
import threading
import traceback
from collections.abc import Sequence

from chalicelib.config import ConfigError, Settings, TypeLimit
from chalicelib.tasktypes import load_builtin_task_types
from chalicelib.tasktypes.catalog import Registered, Registry, TaskTypeClash
from chalicelib.tasktypes.declarations import Declaration, LambdaTargetSpec, compile_payload_schema, read_declarations
from chalicelib.tasktypes.targets import HttpTarget, LambdaTarget

_GENERIC_DESCRIPTION = {"lambda": "Runs in a Lambda function.", "http": "Runs behind an HTTP endpoint."}


class TaskTypesError(ConfigError):
    """A task module or declaration Tasklane cannot use; the message says which and why."""


_lock = threading.Lock()


def load_task_types(settings: Settings) -> Registry:
    """The built-ins, then ``settings.task_modules`` imported, then the declared types.

    Modules register into the process-wide ``registry`` (importing is once per
    process); declared types go into the returned copy, so each settings object
    gets its own view of the declarations file."""
    with _lock:  # two containers built at once must not import a module twice over
        registry = load_builtin_task_types()
        import_task_modules(settings.task_modules, registry)
    declared = [declared_entry(d) for d in read_declarations(settings.task_types_file)]
    try:
        return registry.with_entries(declared)
    except TaskTypeClash as exc:
        raise TaskTypesError(f"{settings.task_types_file or 'the task type declarations'}: {exc}") from None


def task_limits(registry: Registry, settings: Settings) -> dict[str, TypeLimit]:
    """Per-type limits for the queue: each type's own (registration or declaration),
    with ``TASKLANE_TASK_LIMITS`` replacing a type's limits wholesale where it names it."""
    return {**registry.limits(), **settings.task_limits}


def import_task_modules(names: Sequence[str], registry: Registry) -> None:
    """Import each module (its decorators register into ``registry``), failing loudly."""
    for name in names:
        before = registry.registered()
        try:
            importlib.import_module(name)
        except TaskTypeClash as exc:
            raise TaskTypesError(f"task module {name!r} (TASKLANE_TASK_MODULES): {exc}") from None
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name) and (exc.name == name or name[len(exc.name)] == "."):
                raise TaskTypesError(
                    f"task module {name!r} (TASKLANE_TASK_MODULES) is not on the Python path: {exc}. Locally,"
                    " add its directory to PYTHONPATH; in AWS, ship it in vendor/ or requirements.txt"
                ) from None
            raise _import_failed(name, exc) from exc
        except Exception as exc:
            raise _import_failed(name, exc) from exc
        # Nothing new and nothing of its own (it may have been imported already, by an
        # earlier module of the list): a wrong name in the list, or a missing decorator.
        if not registry.registered() - before and not registry.from_module(name):
            raise TaskTypesError(
                f"task module {name!r} (TASKLANE_TASK_MODULES) registered no task type; decorate its"
                ' functions with @registry.task("name") from chalicelib.tasktypes'
            )


def _import_failed(name: str, exc: BaseException) -> TaskTypesError:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename}:{where.lineno}" if where else ""
    return TaskTypesError(
        f"task module {name!r} (TASKLANE_TASK_MODULES) failed to import: {type(exc).__name__}: {exc}{at}"
    )


def declared_entry(declaration: Declaration) -> Registered:
    """The registry entry of a declared type: validated by its payload schema, run by its target."""
    target = declaration.target
    run = (
        LambdaTarget(declaration.name, target)
        if isinstance(target, LambdaTargetSpec)
        else HttpTarget(declaration.name, target)
    )
    schema = declaration.payload_schema
    where = f"task type {declaration.name!r}"
    return Registered(
        name=declaration.name,
        run=run,
        validate=compile_payload_schema(schema, where) if schema is not None else None,
        # Not the ARN or URL: /openapi.json is public, the targets' addresses are not.
        description=declaration.description or _GENERIC_DESCRIPTION[declaration.kind],
        payload_schema=schema or {"type": "object"},
        defaults=declaration.defaults,
        limits=declaration.limits,
        target=declaration.kind,
        inline=True,
        module=None,
    )
