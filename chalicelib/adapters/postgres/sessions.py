"""How the store's connections are opened and used so that they carry no session
state: every connection can be handed to any caller, and a connection pooler that
multiplexes transactions (RDS Proxy, PgBouncer in transaction mode) never has to pin
one (infra/deploy.md, "RDS Proxy").

- Autocommit: each statement is its own transaction unless the store opens one.
- No ``SET``: the only settings changed are transaction-local (``set_config(...,
  true)`` inside a statement, and the isolation level of ``snapshot``, sent as part
  of ``BEGIN``).
- Advisory locks are transaction-scoped (``pg_*advisory_xact_lock``) only.
- Server-side prepared statements (psycopg prepares a query run ``prepare_threshold``
  times on a connection) are optional: ``TASKLANE_DB_PREPARED_STATEMENTS=false``
  turns them off for a proxy.
- TCP keepalives and a user timeout (``dead_host_options``,
  ``TASKLANE_DB_TCP_TIMEOUT_SECONDS``): socket options of the client, which give up
  on a server host that vanished without a reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

# psycopg's default: a query run this many times on a connection gets prepared.
PREPARE_THRESHOLD = 5
# TASKLANE_DB_TCP_TIMEOUT_SECONDS' default (config.Settings.db_tcp_timeout_seconds).
TCP_TIMEOUT_SECONDS = 20.0


def connection_options(*, prepare: bool = True, tcp_timeout_seconds: float = TCP_TIMEOUT_SECONDS) -> dict[str, Any]:
    """The pool's ``kwargs`` for each new connection."""
    return {
        "autocommit": True,
        "row_factory": dict_row,
        "connect_timeout": 5,
        # None: psycopg never names a server-side prepared statement, the session
        # state that pins a proxied connection.
        "prepare_threshold": PREPARE_THRESHOLD if prepare else None,
        **dead_host_options(tcp_timeout_seconds),
    }


def dead_host_options(seconds: float) -> dict[str, int]:
    """libpq's TCP options that give up on a server host silent for about ``seconds``.

    A database host that vanishes without a TCP reset (a failover that moves the
    address, a crashed instance) leaves a query in flight waiting for an answer, and
    a query sent afterwards retransmitting: by Linux's defaults two hours of idle
    before the first keepalive probe, and about 15 minutes of retransmissions, while
    a pool hands out its dead connections one after another.  ``tcp_user_timeout``
    bounds how long sent data may go unacknowledged; keepalive probes, which the
    server's kernel answers however long its backend works on a statement, find a
    silent host while the client only waits.  Both are socket options of the client:
    nothing the server or a proxy (RDS Proxy, PgBouncer) keeps."""
    return {
        "keepalives": 1,
        "keepalives_idle": max(1, round(seconds / 2)),
        "keepalives_interval": max(1, round(seconds / 6)),
        "keepalives_count": 3,
        "tcp_user_timeout": round(seconds * 1000),
    }


@contextmanager
def snapshot(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A read-only REPEATABLE READ transaction, so several reads add up.  psycopg opens
    it with ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``, not a ``SET
    TRANSACTION`` that a proxy would take for session state; the connection's
    defaults are back before it returns to the pool."""
    conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
    try:
        with conn.transaction():
            yield
    finally:
        conn.isolation_level, conn.read_only = None, None
