"""Cold start: how long a fresh interpreter takes to ``import app`` (what every
Lambda cold start pays before the first request), best of several runs.

``python -m bench.coldstart --against OLD_CHECKOUT`` compares two checkouts as
interleaved pairs (which side goes first alternates), for five probes:

- ``app``: ``import app`` alone (the figure of the goals table);
- ``drain``, ``sweep``: ``import app`` plus what those functions import on their first
  call (``chalicelib.entrypoints`` and the use case), before any connection is made;
- ``executor``: ``import app`` plus what the executor function's first call imports
  (``chalicelib.execution.remote`` and the task types' loading);
- ``submit``: ``import app`` plus what the API's first ``POST /api/v1/tasks`` imports
  (the container, the request parser, the presenter, the submit use case), so that
  work moved from the import into the first request is counted, not hidden.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_TIMED = "import json, time; t = time.perf_counter(); {imports}; print(json.dumps((time.perf_counter() - t) * 1000))"
PROBE = _TIMED.format(imports="import app")
PROBES = {
    "app": PROBE,
    "drain": _TIMED.format(imports="import app; import chalicelib.entrypoints, chalicelib.services.drain"),
    "sweep": _TIMED.format(imports="import app; import chalicelib.entrypoints, chalicelib.services.sweep"),
    "executor": _TIMED.format(imports="import app; import chalicelib.execution.remote, chalicelib.tasktypes.loading"),
    "submit": _TIMED.format(
        imports="import app; import chalicelib.container, chalicelib.api.params, chalicelib.api.presenters, "
        "chalicelib.services.submit"
    ),
}


def measure(runs: int = 7, root: Path = ROOT) -> dict[str, Any]:
    """Best and median import time of ``app`` (ms), and wall time of ``python -c 'import app'``."""
    imports: list[float] = []
    walls: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, check=True)
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


def _run(root: Path, probe: str) -> float:
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def compare(old: Path, new: Path, runs: int, probe: str) -> dict[str, Any]:
    """``runs`` interleaved pairs of one probe in two checkouts: each side's best and
    median (ms) and the median of the pairs' new/old ratios (drift cancels in a pair)."""
    sides: dict[str, list[float]] = {"old": [], "new": []}
    ratios: list[float] = []
    for i in range(runs):
        order = [("old", old), ("new", new)] if i % 2 == 0 else [("new", new), ("old", old)]
        got = {side: _run(root, PROBES[probe]) for side, root in order}
        for side, ms in got.items():
            sides[side].append(ms)
        ratios.append(got["new"] / got["old"])
    summary: dict[str, Any] = {"probe": probe, "pairs": runs, "ratio_median": statistics.median(ratios)}
    for side, values in sides.items():
        summary[side] = {"best": min(values), "median": statistics.median(values), "max": max(values)}
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs (pairs with --against); default 20")
    parser.add_argument("--against", type=Path, help="another checkout to compare with, as interleaved pairs")
    parser.add_argument("--probe", choices=sorted(PROBES), action="append", help="default: all")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree to measure; default this checkout")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.against is None:
        print(json.dumps(measure(args.runs, root)))
        return
    for probe in args.probe or list(PROBES):
        print(json.dumps(compare(args.against.resolve(), root, args.runs, probe)), flush=True)


if __name__ == "__main__":
    main()
