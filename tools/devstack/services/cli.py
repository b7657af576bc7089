"""Command line of :mod:`tools.devstack.services` and stopping a state dir's private servers.

``python -m tools.devstack.services ensure|stop --state-dir DIR`` runs :func:`main`
(via ``__main__.py``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tools.devstack.services.common import (
    ENV_DATABASE_URL,
    ENV_REDIS_URL,
    SHARED_PG_PORT,
    SHARED_REDIS_PORT,
    _read_json,
    _record_int,
)
from tools.devstack.services.pg_tools import _pg_run_as, _pg_stop, _postmaster_pid
from tools.devstack.services.postgres import _PG_RECORD, ensure_postgres
from tools.devstack.services.redis_server import (
    _REDIS_RECORD,
    RedisHandle,
    _redis_record_pid,
    ensure_redis,
    redis_url,
)

_HELP = """PostgreSQL and Redis for the local stack and the tests, without a system service.

ensure: print export lines for TASKLANE_DATABASE_URL / TASKLANE_REDIS_URL, starting
        private servers under --state-dir when no shared server answers.
stop:   stop the private servers recorded in --state-dir (never the shared ones).
"""


def stop_private_services(state_dir: Path, *, purge: bool = False) -> list[str]:
    """Stop the private PostgreSQL and Redis recorded in ``state_dir``.

    Only servers this module started there are touched (never 5432/6379).  ``purge``
    also deletes a cluster kept outside ``state_dir`` (as root, under the temporary
    directory's ``tasklane-pg``, when the postgres user cannot reach the checkout:
    pg_tools), which removing the checkout's ``.tasklane`` would leave behind.
    Returns a line per server stopped or cluster deleted.
    """
    state_dir = Path(os.path.abspath(state_dir))
    stopped: list[str] = []
    pg_record = _read_json(state_dir / _PG_RECORD)
    data_dir, bindir = pg_record.get("data_dir"), pg_record.get("bindir")
    if isinstance(data_dir, str) and isinstance(bindir, str) and _postmaster_pid(Path(data_dir)):
        _pg_stop(Path(bindir), Path(data_dir), _pg_run_as())
        stopped.append(f"stopped postgresql {data_dir}")
    outside = Path(tempfile.gettempdir()) / "tasklane-pg"
    if purge and isinstance(data_dir, str) and Path(data_dir).parent == outside and Path(data_dir).is_dir():
        shutil.rmtree(data_dir, ignore_errors=True)
        stopped.append(f"deleted {data_dir}")
    redis_dir = state_dir / "redis"
    port = _record_int(_read_json(redis_dir / _REDIS_RECORD), "port")
    if port is not None and port not in (SHARED_PG_PORT, SHARED_REDIS_PORT):
        pid = _redis_record_pid(redis_dir, port)
        if pid is not None:
            RedisHandle(redis_url(port), True, redis_dir, port, None, None, pid).stop()
            stopped.append(f"stopped redis {redis_dir} (port {port})")
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``ensure`` prints export lines, ``stop`` stops private servers."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.devstack.services",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("ensure", "stop"))
    parser.add_argument("--state-dir", type=Path, default=Path(".tasklane"))
    parser.add_argument("--force-private", action="store_true", help="skip the shared servers on 5432/6379")
    parser.add_argument("--purge", action="store_true", help="stop: also delete a cluster kept outside --state-dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            pg = ensure_postgres(args.state_dir, force_private=args.force_private)
            rd = ensure_redis(args.state_dir, force_private=args.force_private)
            print(f"export {ENV_DATABASE_URL}={shlex.quote(pg.url)}")
            print(f"export {ENV_REDIS_URL}={shlex.quote(rd.url)}")
        else:
            for line in stop_private_services(args.state_dir, purge=args.purge):
                print(line, file=sys.stderr)
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"devservices: {exc}", file=sys.stderr)
        return 1
    return 0
