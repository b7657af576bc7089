"""Cold start: importing ``app`` in a fresh interpreter loads nothing heavy.

Lambda pays the import on every cold start of every function (the API included),
so heavy clients (boto3, fpdf2, Powertools' idempotency and Tracer) are created
lazily.  This test holds that structure; the time itself (budget 300 ms on 2
cores) is measured by the benchmark (``python -m bench``), since a timed test on
a shared machine proves nothing either way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
heavy = [m for m in ("boto3", "fpdf", "aws_xray_sdk", "aws_lambda_powertools.utilities.idempotency",
                     "aws_lambda_powertools.utilities.parameters", "moto", "pypdf") if m in sys.modules]
print(json.dumps({"import_ms": (t1 - t0) * 1000, "heavy": heavy}))
"""


def _measure() -> tuple[float, float, list[str]]:
    import time

    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    wall = (time.perf_counter() - started) * 1000
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(data["import_ms"]), wall, list(data["heavy"])


def test_importing_the_app_loads_no_heavy_client() -> None:
    import_ms, wall_ms, heavy = _measure()
    print(f"\ncold start: import app {import_ms:.0f} ms; python -c 'import app' {wall_ms:.0f} ms")
    assert heavy == [], f"imported at cold start, should be lazy: {heavy}"
