"""Cold start: importing ``app`` in a fresh interpreter loads nothing heavy.

Lambda pays the import on every cold start of every function (the API, drain, sweep
and executor all import ``app``), so heavy clients (boto3, fpdf2, Powertools'
idempotency and Tracer) are created lazily, and the route modules import their
parsers, use cases and adapters (psycopg, redis, the container) inside the handlers.
These tests hold that structure: a module named here that comes back at import time
fails them.  The time itself (budget 300 ms on 2 cores) is measured by the benchmark
(``python -m bench``, ``python -m bench.coldstart --against OLD``), since a timed
test on a shared machine proves nothing either way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Never needed before a function's first call: AWS SDKs, PDF, tracing and test tools.
HEAVY_CLIENTS = (
    "boto3",
    "fpdf",
    "aws_xray_sdk",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_lambda_powertools.utilities.parameters",
    "moto",
    "pypdf",
)
# Loaded by the first call that needs them, not by ``import app`` (issue #14: these
# made ``import app`` 348 ms with a best of 7).
DEFERRED = (
    "psycopg",
    "psycopg_pool",
    "redis",
    "prometheus_client",
    "croniter",
    "fastjsonschema",
    "chalicelib.container",
    "chalicelib.core.records",
    "chalicelib.api.params",
    "chalicelib.api.presenters",
    "chalicelib.api.openapi",
)

PROBE = """
import json, sys, time
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
print(json.dumps({{"import_ms": (t1 - t0) * 1000, "modules": sorted(sys.modules)}}))
"""


def _loaded(imports: str) -> tuple[float, set[str]]:
    """The modules a fresh interpreter holds after ``imports`` (run in the repo root)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(data["import_ms"]), set(data["modules"])


def test_importing_the_app_loads_no_heavy_client() -> None:
    import_ms, modules = _loaded("import app")
    print(f"\ncold start: import app {import_ms:.0f} ms, {len(modules)} modules")
    assert [m for m in HEAVY_CLIENTS if m in modules] == [], "imported at cold start, should be lazy"
    assert [m for m in DEFERRED if m in modules] == [], "imported at cold start, should be deferred to first use"


# What each function imports on its first call, before it connects anywhere (the same
# probes as ``python -m bench.coldstart``), and what it must leave to the others.
FIRST_CALLS = {
    "drain": (
        "import app; import chalicelib.entrypoints, chalicelib.services.drain",
        ("chalicelib.api.params", "chalicelib.core.requests", "fastjsonschema", "croniter", "prometheus_client"),
    ),
    "sweep": (
        "import app; import chalicelib.entrypoints, chalicelib.services.sweep",
        ("chalicelib.api.params", "chalicelib.core.requests", "chalicelib.services.drain", "prometheus_client"),
    ),
    # The executor function (TASKLANE_EXECUTOR_MODE=lambda) runs one attempt: it never
    # needed PostgreSQL or Redis, which it loaded with ``import app`` until issue #14.
    "executor": (
        "import app; from chalicelib.execution import remote; remote._task_types()",
        ("psycopg", "redis", "chalicelib.container", "chalicelib.api.params", "prometheus_client", "croniter"),
    ),
    "submit": (
        "import app; import chalicelib.container, chalicelib.api.params, chalicelib.api.presenters, "
        "chalicelib.services.submit",
        ("chalicelib.services.drain", "chalicelib.execution.runner", "croniter", "prometheus_client"),
    ),
}


@pytest.mark.parametrize("function", sorted(FIRST_CALLS))
def test_a_functions_first_call_leaves_the_others_modules_alone(function: str) -> None:
    imports, not_needed = FIRST_CALLS[function]
    _, modules = _loaded(imports)
    assert [m for m in not_needed if m in modules] == [], f"the {function} function's first call loads these"
