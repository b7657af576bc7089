"""PostgreSQL and Redis for the local stack and the tests, without a system service.

Resolution order used by :func:`ensure_postgres` and :func:`ensure_redis`:

1. ``TASKLANE_DATABASE_URL`` / ``TASKLANE_REDIS_URL`` if set: used as is.
2. Unless ``force_private`` (or ``TASKLANE_PRIVATE_SERVICES=1``): the usual local
   server on 127.0.0.1:5432 / 127.0.0.1:6379, if it answers a real protocol check.
3. Otherwise a private server under ``state_dir`` on a free port of 127.0.0.1.

Fault tests get servers of their own with :func:`start_private_postgres` and
:func:`start_private_redis`, which they may stop, kill and restart freely.

This module never stops, flushes or reconfigures the machine's shared servers on
5432 and 6379: handles for those have ``started=False`` (``stop()`` is a no-op)
and refuse ``kill()``/``restart()``; private servers never use those ports.

Private servers listen on 127.0.0.1 only, PostgreSQL with ``trust`` auth for user
``postgres`` and Redis without a password: fine for a dev box or CI, nothing more.
Layout of a state dir: ``pg/`` (the cluster, or see ``pg.json`` when it had to
live under ``/tmp/tasklane-pg/``), ``pg.json``, ``redis/`` (log and
``tasklane-redis.json`` with pid and port), plus lock files.

Command line (for debugging)::

    python -m tools.devstack.services ensure --state-dir .tasklane
    python -m tools.devstack.services stop --state-dir .tasklane
"""

from __future__ import annotations

from tools.devstack.services.cli import (
    main,
    stop_private_services,
)
from tools.devstack.services.common import (
    ENV_DATABASE_URL,
    ENV_PRIVATE_SERVICES,
    ENV_REDIS_URL,
    LOCALHOST,
    POLL_INTERVAL,
    SHARED_PG_PORT,
    SHARED_PG_URL,
    SHARED_REDIS_PORT,
    SHARED_REDIS_URL,
    START_TIMEOUT,
    STOP_TIMEOUT,
    find_free_port,
    pid_alive,
    private_services_forced,
)

# Private helpers re-exported for the unit tests (tests/unit/test_devservices.py).
from tools.devstack.services.common import (
    _wait_for as _wait_for,
)
from tools.devstack.services.pg_tools import (
    PG_SYSTEM_USER,
    can_traverse,
    find_pg_bindir,
    pg_bindir_candidates,
)
from tools.devstack.services.pg_tools import (
    _PostmasterInfo as _PostmasterInfo,
)
from tools.devstack.services.pg_tools import (
    _read_postmaster_pid as _read_postmaster_pid,
)
from tools.devstack.services.postgres import (
    PostgresHandle,
    database_url,
    drop_database,
    drop_stale_test_databases,
    ensure_database,
    ensure_postgres,
    pg_server_url,
    postgres_answers,
    start_private_postgres,
    test_database_name,
)
from tools.devstack.services.redis_server import (
    ENV_DIE_WITH_PARENT,
    RedisHandle,
    ensure_redis,
    find_redis_server,
    redis_answers,
    redis_url,
    start_private_redis,
)

__all__ = [
    "ENV_DATABASE_URL",
    "ENV_DIE_WITH_PARENT",
    "ENV_PRIVATE_SERVICES",
    "ENV_REDIS_URL",
    "LOCALHOST",
    "PG_SYSTEM_USER",
    "POLL_INTERVAL",
    "SHARED_PG_PORT",
    "SHARED_PG_URL",
    "SHARED_REDIS_PORT",
    "SHARED_REDIS_URL",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "PostgresHandle",
    "RedisHandle",
    "can_traverse",
    "database_url",
    "drop_database",
    "drop_stale_test_databases",
    "ensure_database",
    "ensure_postgres",
    "ensure_redis",
    "find_free_port",
    "find_pg_bindir",
    "find_redis_server",
    "main",
    "pg_bindir_candidates",
    "pg_server_url",
    "pid_alive",
    "postgres_answers",
    "private_services_forced",
    "redis_answers",
    "redis_url",
    "start_private_postgres",
    "start_private_redis",
    "stop_private_services",
    "test_database_name",
]
