"""Cold start: importing ``app`` in a fresh interpreter stays under 300 ms.

Lambda pays the import on every cold start of every function (the API included),
so heavy clients (boto3, fpdf2, Powertools' idempotency and Tracer) are created
lazily.  Measured as the best of three fresh interpreters, in-process around
``import app`` (interpreter start-up excluded; it is printed too).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUDGET_MS = 300.0
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


def test_importing_the_app_is_cheap() -> None:
    runs = [_measure() for _ in range(3)]
    # A busy machine (other test processes) can only make it slower: sample a little
    # longer before calling it a regression.
    while min(r[0] for r in runs) >= BUDGET_MS and len(runs) < 8:
        runs.append(_measure())
    best_import = min(r[0] for r in runs)
    best_wall = min(r[1] for r in runs)
    n = len(runs)
    print(f"\ncold start: import app {best_import:.0f} ms (best of {n}); python -c 'import app' {best_wall:.0f} ms")
    assert runs[0][2] == [], f"imported at cold start, should be lazy: {runs[0][2]}"
    assert best_import < BUDGET_MS, f"import app took {best_import:.0f} ms (budget {BUDGET_MS:.0f} ms)"
