"""A team's task modules (``TASKLANE_TASK_MODULES``): imported from the Python path,
registered with the built-ins' decorator, their defaults used at submit, and every
mistake a loud ``TaskTypesError`` (never a silent skip)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import Settings, TypeLimit
from chalicelib.core.errors import ValidationError
from chalicelib.core.model import Priority
from chalicelib.core.requests import parse_task
from chalicelib.tasktypes import load_builtin_task_types, registry
from chalicelib.tasktypes.loading import TaskTypesError, load_task_types, task_limits

GOOD = '''
from chalicelib.core.errors import PermanentError
from chalicelib.tasktypes import TaskContext, registry, require


def _validate(payload):
    require(isinstance(payload.get("n"), int), 'double needs {"n": <integer>}')


@registry.task(
    "NAME",
    validate=_validate,
    payload_schema={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
    max_retries=7,
    timeout_seconds=42,
    priority="high",
    limits={"concurrency": 3, "rate": "5/s"},
)
def double(payload, ctx: TaskContext):
    """Doubles n."""
    return {"doubled": payload["n"] * 2, "attempt": ctx.attempt}
'''


@pytest.fixture
def team_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    """Write modules into a directory on ``sys.path``; the process-wide registry and
    ``sys.modules`` are put back afterwards, so other tests never see them."""
    load_builtin_task_types()
    saved = dict(registry._by_name)
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(module: str, source: str) -> str:
        path = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        written.append(module)
        return module

    yield write
    registry._by_name.clear()
    registry._by_name.update(saved)
    for name in list(sys.modules):
        if any(name == m or name.startswith(m.split(".")[0]) for m in written):
            sys.modules.pop(name, None)


def _settings(*modules: str, **env: str) -> Settings:
    return Settings.from_env({"TASKLANE_TASK_MODULES": ",".join(modules), **env})


def test_a_team_module_registers_a_task_type_with_its_defaults(team_dir: Callable[[str, str], str]) -> None:
    module = team_dir("acme_tasks", GOOD.replace("NAME", "acme-double"))
    loaded = load_task_types(_settings(module))
    entry = loaded.get("acme-double")
    assert entry is not None and entry.module == "acme_tasks" and entry.target == "python"
    assert entry.description == "Doubles n."
    assert (entry.defaults.max_retries, entry.defaults.timeout_seconds, entry.defaults.priority) == (
        7,
        42,
        Priority.HIGH,
    )
    assert entry.limits == TypeLimit(3, 5.0, 5)
    assert "acme-double" in loaded.names() and "noop" in loaded.names()
    assert entry.run({"n": 4}, _ctx()) == {"doubled": 8, "attempt": 1}


def test_submit_uses_the_types_defaults_unless_the_request_says(team_dir: Callable[[str, str], str]) -> None:
    module = team_dir("acme_defaults", GOOD.replace("NAME", "acme-defaults"))
    settings = _settings(module)
    loaded = load_task_types(settings)
    implied = parse_task({"name": "acme-defaults", "payload": {"n": 1}}, settings, loaded)
    assert (implied.max_retries, implied.timeout_seconds, implied.priority) == (7, 42, Priority.HIGH)
    said = parse_task(
        {"name": "acme-defaults", "payload": {"n": 1}, "max_retries": 0, "timeout_seconds": 5, "priority": "low"},
        settings,
        loaded,
    )
    assert (said.max_retries, said.timeout_seconds, said.priority) == (0, 5, Priority.LOW)
    builtin = parse_task({"name": "noop"}, settings, loaded)
    assert (builtin.max_retries, builtin.timeout_seconds, builtin.priority) == (
        settings.default_max_retries,
        settings.default_timeout_seconds,
        Priority.NORMAL,
    )
    with pytest.raises(ValidationError, match=r"payload is invalid for acme-defaults"):
        parse_task({"name": "acme-defaults", "payload": {"n": "x"}}, settings, loaded)


def test_a_module_not_on_the_path_fails_loudly() -> None:
    with pytest.raises(TaskTypesError, match=r"'nowhere_tasks' .* is not on the Python path.*PYTHONPATH"):
        load_task_types(_settings("nowhere_tasks"))


def test_a_module_that_raises_on_import_names_the_error_and_line(team_dir: Callable[[str, str], str]) -> None:
    module = team_dir("acme_broken", "import json\nraise RuntimeError('no CRM token configured')\n")
    with pytest.raises(TaskTypesError) as caught:
        load_task_types(_settings(module))
    message = str(caught.value)
    assert "task module 'acme_broken' (TASKLANE_TASK_MODULES) failed to import" in message
    assert "RuntimeError: no CRM token configured" in message and "acme_broken.py:2" in message


def test_a_missing_dependency_of_the_module_is_not_blamed_on_the_path(team_dir: Callable[[str, str], str]) -> None:
    module = team_dir("acme_deps", "import acme_missing_dependency\n")
    with pytest.raises(TaskTypesError, match=r"failed to import: ModuleNotFoundError.*acme_missing_dependency"):
        load_task_types(_settings(module))


def test_a_name_clash_with_a_builtin_is_an_error(team_dir: Callable[[str, str], str]) -> None:
    module = team_dir("acme_clash", GOOD.replace("NAME", "noop"))
    with pytest.raises(TaskTypesError, match=r"'noop' is already registered by chalicelib.tasktypes.builtin"):
        load_task_types(_settings(module))


def test_a_module_that_registers_nothing_is_an_error(team_dir: Callable[[str, str], str]) -> None:
    module = team_dir("acme_empty", "X = 1\n")
    with pytest.raises(TaskTypesError, match=r"registered no task type"):
        load_task_types(_settings(module))


def test_bad_defaults_in_a_registration_are_refused(team_dir: Callable[[str, str], str]) -> None:
    source = GOOD.replace("NAME", "acme-bad").replace("max_retries=7", "max_retries=1000")
    module = team_dir("acme_bad_defaults", source)
    with pytest.raises(TaskTypesError, match=r"acme-bad.*max_retries must be an integer from 0 to 100"):
        load_task_types(_settings(module))


def test_declared_types_clash_with_module_types(team_dir: Callable[[str, str], str], tmp_path: Path) -> None:
    module = team_dir("acme_decl", GOOD.replace("NAME", "acme-decl"))
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"task_types": {"acme-decl": {"http": {"url": "http://127.0.0.1:9/x"}}}}))
    with pytest.raises(TaskTypesError, match=r"'acme-decl' is already registered by acme_decl"):
        load_task_types(_settings(module, TASKLANE_TASK_TYPES_FILE=str(path)))


def test_declared_types_are_per_registry_not_process_wide(tmp_path: Path) -> None:
    path = tmp_path / "types.json"
    schema = {"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}}
    decl = {"http": {"url": "http://127.0.0.1:9/x"}, "payload_schema": schema, "max_retries": 1, "priority": "low"}
    path.write_text(json.dumps({"task_types": {"crm-sync": decl}}))
    settings = Settings.from_env({"TASKLANE_TASK_TYPES_FILE": str(path)})
    first, second = load_task_types(settings), load_task_types(settings)  # no "registered twice"
    entry = first.get("crm-sync")
    assert entry is not None and second.get("crm-sync") is not None and registry.get("crm-sync") is None
    assert entry.target == "http" and entry.inline and entry.payload_schema == schema
    request = parse_task({"name": "crm-sync", "payload": {"to": "x"}}, settings, first)
    assert (request.max_retries, request.priority) == (1, Priority.LOW)
    with pytest.raises(ValidationError, match=r"payload is invalid for crm-sync: payload must contain"):
        parse_task({"name": "crm-sync", "payload": {}}, settings, first)


def test_limits_come_from_registrations_and_the_setting_overrides_them(team_dir: Callable[[str, str], str]) -> None:
    module = team_dir("acme_limits", GOOD.replace("NAME", "acme-limits"))
    settings = _settings(module, TASKLANE_TASK_LIMITS=json.dumps({"noop": {"concurrency": 1}}))
    loaded = load_task_types(settings)
    assert loaded.limits() == {"acme-limits": TypeLimit(3, 5.0, 5)}
    override = _settings(module, TASKLANE_TASK_LIMITS=json.dumps({"acme-limits": {"rate": "1/s"}}))
    assert task_limits(load_task_types(override), override) == {"acme-limits": TypeLimit(0, 1.0, 1)}
    assert task_limits(loaded, settings) == {"acme-limits": TypeLimit(3, 5.0, 5), "noop": TypeLimit(1, 0.0, 1)}


def _ctx() -> Any:
    from chalicelib.tasktypes import TaskContext

    return TaskContext(task_id="t", name="x", tenant="acme", attempt=1, max_retries=0, timeout_seconds=5)


def test_the_executor_function_runs_team_modules_but_not_declared_targets(
    team_dir: Callable[[str, str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.errors import PermanentError
    from chalicelib.execution import remote

    module = team_dir("acme_exec", GOOD.replace("NAME", "acme-exec"))
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"task_types": {"acme-hook": {"http": {"url": "http://127.0.0.1:9/x"}}}}))
    monkeypatch.setattr(remote, "get_settings", lambda: _settings(module, TASKLANE_TASK_TYPES_FILE=str(path)))
    monkeypatch.setattr(remote, "_types", None)
    task = {"id": "t", "tenant": "acme", "attempt": 2, "max_retries": 3, "timeout_seconds": 5}
    answer = remote.handle({"tasklane": 1, "task": {**task, "name": "acme-exec"}, "payload": {"n": 3}}, None)
    assert answer == {"doubled": 6, "attempt": 2}
    with pytest.raises(PermanentError, match="no executor is registered for task name 'acme-hook'"):
        remote.handle({"tasklane": 1, "task": {**task, "name": "acme-hook"}, "payload": {}}, None)


def test_executor_mode_lambda_sends_module_types_away_but_keeps_declared_targets_inline(
    team_dir: Callable[[str, str], str], tmp_path: Path
) -> None:
    from chalicelib.execution.remote import RemoteExecutor, registry_for
    from chalicelib.tasktypes.targets import HttpTarget

    module = team_dir("acme_mode", GOOD.replace("NAME", "acme-mode"))
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"task_types": {"acme-push": {"http": {"url": "http://127.0.0.1:9/x"}}}}))
    settings = _settings(module, TASKLANE_TASK_TYPES_FILE=str(path), TASKLANE_EXECUTOR_MODE="lambda")
    remote_types = registry_for(load_task_types(settings), settings)
    module_entry, declared_entry = remote_types.get("acme-mode"), remote_types.get("acme-push")
    assert module_entry is not None and isinstance(module_entry.run, RemoteExecutor)
    assert declared_entry is not None and isinstance(declared_entry.run, HttpTarget)


def test_a_package_whose_submodules_register_counts_as_registering(team_dir: Callable[[str, str], str]) -> None:
    team_dir("acme_pkg.billing", GOOD.replace("NAME", "acme-pkg-billing"))
    package = team_dir("acme_pkg.__init__", "from acme_pkg import billing  # noqa: F401\n")
    assert package == "acme_pkg.__init__"
    loaded = load_task_types(_settings("acme_pkg"))
    assert loaded.get("acme-pkg-billing") is not None
