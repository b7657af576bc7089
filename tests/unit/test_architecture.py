"""The tree's architecture, held by a test: imports flow one way and never in a circle.

The import graph is read from the source with ``ast`` (every ``import``, module-level
or inside a function, since a lazy import hides a cycle without removing it; imports
under ``if TYPE_CHECKING:`` are left out because they never run).

Layers of ``chalicelib`` (a package may import itself and the layers below it):

    api          HTTP: routes, access, responses, presenters, OpenAPI
    entrypoints  the drain/sweep/executor function bodies
    services     use cases
    container    the process's wiring of adapters (the only place that builds them)
    execution    runs claimed tasks (in the drainer, or in the executor function)
    tasktypes    the task types (builtin, email, sms, pdf, http-request, webhook)
    adapters     PostgreSQL, Redis, AWS, outbound HTTP
    observability logging, Powertools, metrics
    core         the domain: model, errors, retry, requests, cron; no I/O
    config       settings from the environment (importable from anywhere)

``tools`` (the local stack and the operator CLI) may import ``chalicelib``;
``chalicelib`` never imports ``tools`` (it is not deployed).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Highest first; each layer may import the layers after it.
LAYERS = [
    "api",
    "entrypoints",
    "services",
    "container",
    "execution",
    "tasktypes",
    "adapters",
    "observability",
    "core",
    "config",
]

# Modules of core that must stay free of I/O libraries.
IO_LIBRARIES = {"psycopg", "psycopg_pool", "redis", "boto3", "botocore", "chalice", "urllib3", "requests", "httpx"}


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every module name imported by ``path`` (absolute, resolved), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (name for stmt in child.orelse for name in walk(ast.Module(body=[stmt], type_ignores=[])))
                continue
            if isinstance(child, ast.Import):
                yield from (alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                yield base
                # ``from pkg import mod`` imports the submodule pkg.mod when there is one.
                yield from (f"{base}.{alias.name}" for alias in child.names)
            yield from walk(child)

    yield from walk(tree)


def _graph() -> dict[str, set[str]]:
    modules = {**_modules("chalicelib"), **_modules("tools"), "app": ROOT / "app.py"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "chalicelib" or len(parts) < 2:
        return None
    return parts[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module.startswith("chalicelib") and target.split(".")[0] in {"tools", "app"}:
                bad.append(f"{module} -> {target}: chalicelib never imports developer tooling or app.py")
                continue
            src, dst = _layer(module), _layer(target)
            if src is None or dst is None or src == dst or dst == "config":
                continue
            if src not in LAYERS or dst not in LAYERS:
                bad.append(f"{module} -> {target}: {src or dst} is not a known layer; add it to LAYERS")
            elif LAYERS.index(dst) < LAYERS.index(src):
                bad.append(f"{module} -> {target}: {src} may not import the higher layer {dst}")
    return bad


def test_chalicelib_and_tools_have_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (lazy imports included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_imports_flow_down_the_layers() -> None:
    bad = layer_violations(_graph())
    assert not bad, "layer jumps:\n" + "\n".join(bad)


def test_core_does_no_io() -> None:
    graph_core = {
        name: {m.split(".")[0] for m in _imports(path, name)}
        for name, path in _modules("chalicelib").items()
        if name.startswith("chalicelib.core")
    }
    bad = {name: sorted(libs & IO_LIBRARIES) for name, libs in graph_core.items() if libs & IO_LIBRARIES}
    assert not bad, f"chalicelib.core must not import I/O libraries: {bad}"


def test_the_checks_catch_what_they_claim() -> None:
    """The detectors themselves: a planted cycle and a planted layer jump are found."""
    graph = {"chalicelib.core.a": {"chalicelib.core.b"}, "chalicelib.core.b": {"chalicelib.core.a"}}
    assert _cycles(graph) == [["chalicelib.core.a", "chalicelib.core.b"]]
    assert layer_violations({"chalicelib.core.model": {"chalicelib.services.submit"}})
    assert layer_violations({"chalicelib.services.x": {"tools.cli.main"}})
    assert not layer_violations({"chalicelib.api.routes": {"chalicelib.services.submit", "chalicelib.config"}})


@pytest.mark.parametrize("lazy", [False, True])
def test_a_planted_cycle_in_the_real_tree_is_caught(tmp_path: Path, lazy: bool) -> None:
    """Parse real files as the test does: a lazy import inside a function counts."""
    pkg = tmp_path / "chalicelib" / "core"
    pkg.mkdir(parents=True)
    (tmp_path / "chalicelib" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from chalicelib.core import b\n")
    body = "def f():\n    from chalicelib.core import a\n" if lazy else "from . import a\n"
    (pkg / "b.py").write_text(body)
    graph = {name: set(_imports(path, name)) for name, path in _modules_under(tmp_path, "chalicelib").items()}
    graph = {k: {m for m in v if m in graph and m != k} for k, v in graph.items()}
    assert _cycles(graph) == [["chalicelib.core.a", "chalicelib.core.b"]]


def _modules_under(root: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


# --- size: modules readable in one sitting, functions that fit on a screen ------------------

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
SIZED_TREES = ("chalicelib", "tools", "client/tasklane_client")


def _sized_files() -> list[Path]:
    return [ROOT / "app.py"] + [p for tree in SIZED_TREES for p in sorted((ROOT / tree).rglob("*.py"))]


def function_lengths(source: str) -> Iterator[tuple[str, int, int]]:
    """``(name, first line, counted lines)`` of every function in ``source``.

    Lines inside a multi-line data literal (a dict, list, tuple or set spanning three
    lines or more: an OpenAPI fragment, a table of defaults) do not count, and neither
    do those of nested functions and classes, which are measured on their own."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        end = node.end_lineno or node.lineno
        lines = set(range(node.lineno, end + 1))
        for inner in ast.walk(node):
            if inner is node or not hasattr(inner, "end_lineno"):
                continue
            inner_end = inner.end_lineno or getattr(inner, "lineno", 0)
            nested = isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            literal = isinstance(inner, ast.Dict | ast.List | ast.Tuple | ast.Set) and (inner_end - inner.lineno >= 2)
            if nested or literal:
                lines -= set(range(inner.lineno, inner_end + 1))
        yield node.name, node.lineno, len(lines)


def test_no_module_is_too_long_to_read() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _sized_files() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split by responsibility): {long}"


def test_no_function_is_longer_than_a_screen() -> None:
    long = [
        f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)"
        for p in _sized_files()
        for name, line, n in function_lengths(p.read_text())
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines outside data literals:\n" + "\n".join(long)


def test_the_size_check_measures_code_not_literals() -> None:
    code = "def f():\n" + "    x = 1\n" * 70
    literal = "def g():\n    return {\n" + '        "k": 1,\n' * 70 + "    }\n"
    assert [n for _, _, n in function_lengths(code)] == [71]
    assert [n for _, _, n in function_lengths(literal)] == [1]
