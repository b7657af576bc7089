"""Cold start: how long a fresh interpreter takes to ``import app`` (what every
Lambda cold start pays before the first request), best of several runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import json, time; t = time.perf_counter(); import app; print(json.dumps((time.perf_counter() - t) * 1000))"


def measure(runs: int = 7) -> dict[str, Any]:
    """Best and median import time of ``app`` (ms), and wall time of ``python -c 'import app'``."""
    imports: list[float] = []
    walls: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
        walls.append((time.perf_counter() - started) * 1000)
        imports.append(float(out.stdout.strip().splitlines()[-1]))
    imports.sort()
    walls.sort()
    return {
        "import_ms_best": imports[0],
        "import_ms_median": imports[len(imports) // 2],
        "process_ms_best": walls[0],
        "runs": runs,
    }
