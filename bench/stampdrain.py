"""``python -m bench.stampdrain``: the real drain worker (``tools.devstack drain``)
with one extra executor, ``bench_stamp``, that records when it started running
(wall clock, the same clock as PostgreSQL's ``now()`` on this host).  Used only
for the end-to-end latency workload; throughput runs use ``tools.devstack drain``
itself with the built-in ``noop``."""

from __future__ import annotations

import sys
import time
from typing import Any

from chalicelib.tasktypes import TaskContext, registry


@registry.task("bench_stamp")
def bench_stamp(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Returns when it started, next to the submitter's t0."""
    return {"t1": time.time(), "t0": payload.get("t0") if isinstance(payload, dict) else None}


if __name__ == "__main__":
    from tools.devstack import supervisor as local

    sys.exit(local.main(["drain"]))
