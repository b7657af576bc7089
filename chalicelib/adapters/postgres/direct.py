"""Hot statements sent through libpq directly (``psycopg.pq``), their rows loaded by
psycopg's own loaders (``psycopg.adapt.Transformer``).

A cursor's ``execute`` and ``fetchall`` cost a one-task claim about 110 µs of client
CPU on our 2-core VM beyond the statement itself (the prepare bookkeeping, the
parameter dumpers, the cursor and its result handling), on the path from a drainer's
wake-up to the task's start (issue 14 round 11).  A statement prepared once per
session under a name of ours, parameters sent as text and the result loaded in one
call costs about half.  Used for the claim (``DirectStatement``) and for a single
submit's INSERT with its commit in flight (``early_row``).

Parameters go as libpq text, which libpq reads as C strings: a NUL would cut one
short, so a value that holds one (or cannot be encoded) raises ``Unsuitable`` before
anything is sent, and the caller takes the ordinary path, whose errors users see.  The
text is UTF-8, so a connection whose ``client_encoding`` is another (a LATIN1 database,
``PGCLIENTENCODING``) takes that path too: psycopg encodes for the connection.
"""

from __future__ import annotations

import re
import select
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

Row = dict[str, Any]
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_UTF8 = (b"UTF8", b"UNICODE")  # what the server reports as client_encoding for UTF-8


class Unsuitable(Exception):
    """A parameter libpq's text form cannot carry as psycopg would; nothing was sent."""


def numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """``%(name)s`` placeholders as ``$n`` (one number per name) and the names in order."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return _PLACEHOLDER.sub(number, sql).encode(), tuple(names)


def text_param(value: Any) -> bytes | None:
    """``value`` in PostgreSQL's text input form (str, int, float, an aware datetime)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, float):
        text = repr(value)  # every digit back, as psycopg sends it
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        raise Unsuitable(type(value).__name__)
    if "\x00" in text:
        raise Unsuitable("NUL")
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise Unsuitable("encoding") from exc


class Prepared:
    """A statement of ours, prepared once per session under ``name`` (or sent unnamed
    each time, ``prepare=False``: behind a proxy that must not see session state)."""

    def __init__(self, name: str, sql: str, *, prepare: bool) -> None:
        self.name = name.encode()
        self.sql, self.names = numbered(sql)
        self.prepare = prepare
        # Connections whose session holds the statement: a session lives as long as its
        # connection object, and the pool drops a broken one.
        self._sessions: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    def values(self, conn: psycopg.Connection[Any], params: Mapping[str, Any]) -> list[bytes | None]:
        """``params`` as ``conn`` takes them; ``Unsuitable`` when one cannot go as text, or
        when ``conn`` does not take UTF-8 (``text_param``'s bytes would be read as another
        encoding's characters: psycopg encodes for the connection)."""
        if conn.pgconn.parameter_status(b"client_encoding") not in _UTF8:
            raise Unsuitable("client_encoding")
        return [text_param(params[n]) for n in self.names]

    def lost(self, conn: psycopg.Connection[Any]) -> None:
        """``conn``'s session does not hold the statement (it is prepared at next use)."""
        self._sessions.discard(conn)

    def held(self, conn: psycopg.Connection[Any]) -> None:
        """``conn``'s session holds the statement already."""
        self._sessions.add(conn)

    def queue(self, conn: psycopg.Connection[Any], values: list[bytes | None], *, binary: bool = False) -> bool:
        """Queue the statement (its Parse first where the session lacks it; inside
        ``pipeline``, nothing written yet); True when a Parse was queued (``take``
        reads its answer first)."""
        pg = conn.pgconn
        fmt = pq.Format.BINARY if binary else pq.Format.TEXT
        if not self.prepare:
            pg.send_query_params(self.sql, values, result_format=fmt)
            return False
        preparing = conn not in self._sessions
        if preparing:
            pg.send_prepare(self.name, self.sql)
        pg.send_query_prepared(self.name, values, result_format=fmt)
        return preparing

    def take(self, conn: psycopg.Connection[Any], preparing: bool) -> tuple[pq.abc.PGresult, psycopg.Error | None]:
        """The statement's result, once it is in, and the error it stands for (None:
        rows), after the Parse's answer when ``queue`` queued one."""
        pg = conn.pgconn
        error: psycopg.Error | None = None
        if preparing:
            error = check(conn, next_result(pg), pq.ExecStatus.COMMAND_OK)
            if error is None:
                self.held(conn)
        res = next_result(pg)
        return res, error or check(conn, res, pq.ExecStatus.TUPLES_OK)

    def result(
        self, conn: psycopg.Connection[Any], values: list[bytes | None], *, binary: bool = False
    ) -> pq.abc.PGresult:
        """Send the statement and a Sync in one write (inside ``pipeline``) and return its
        result once the Sync's answer is read too; an error is raised then."""
        return self.answer(conn, self.sent(conn, values, binary=binary))

    def sent(self, conn: psycopg.Connection[Any], values: list[bytes | None], *, binary: bool = False) -> bool:
        """The statement and a Sync written in one write (in pipeline mode), the answer
        left for ``answer`` (with what this returns: whether a Parse went first)."""
        preparing = self.queue(conn, values, binary=binary)
        conn.pgconn.pipeline_sync()
        send(conn.pgconn)
        return preparing

    def send_apart(self, conn: psycopg.Connection[Any], values: list[bytes | None]) -> bool:
        """``sent`` outside a ``pipeline`` block, its rows left for ``rows_apart`` (maybe on
        another thread, the connection the reader's until then): pipeline mode is entered
        for it, and left again if the write fails."""
        conn.pgconn.enter_pipeline_mode()
        try:
            return self.sent(conn, values)
        except BaseException:
            leave_pipeline(conn)
            raise

    def rows_apart(self, conn: psycopg.Connection[Any], preparing: bool) -> list[Row]:
        """The dict rows of a statement ``send_apart`` wrote; pipeline mode left either way
        (the connection closed when its state is unknown: ``leave_pipeline``)."""
        try:
            res = self.answer(conn, preparing)
        finally:
            leave_pipeline(conn)
        return dict_rows(conn, res)

    def answer(self, conn: psycopg.Connection[Any], preparing: bool) -> pq.abc.PGresult:
        """The result of a statement ``sent``, once the Sync's answer is read too; an
        error is raised then."""
        res, error = self.take(conn, preparing)
        synced(conn)
        if error is not None:
            raise error
        return res


def session_lost(conn: psycopg.Connection[Any], statements: Sequence[Prepared], exc: psycopg.Error) -> bool:
    """Whether ``exc`` says the session lacks ``statements`` (``DISCARD ALL``) or holds one
    already (bookkeeping lost); the bookkeeping is put right either way.  Neither error
    leaves anything committed."""
    if isinstance(exc, psycopg.errors.InvalidSqlStatementName):
        for statement in statements:
            statement.lost(conn)
        return True
    if isinstance(exc, psycopg.errors.DuplicatePreparedStatement):
        for statement in statements:
            if statement.name.decode() in str(exc):
                statement.held(conn)
        return True
    return False


def retrying(conn: psycopg.Connection[Any], statements: Sequence[Prepared], run: Callable[[], Any]) -> Any:
    """``run()``, again after the session turned out to lack ``statements`` or to hold
    one already (``session_lost``; each such error names one, so a run per statement at
    most)."""
    for _ in statements:
        try:
            return run()
        except psycopg.Error as exc:
            if not session_lost(conn, statements, exc):
                raise
    return run()


def dict_rows(conn: psycopg.Connection[Any], res: pq.abc.PGresult) -> list[Row]:
    """``res``'s rows as dicts, loaded by psycopg's loaders for ``conn``."""
    tx = Transformer.from_context(conn)
    tx.set_pgresult(res)
    names = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
    return tx.load_rows(0, res.ntuples, lambda values: dict(zip(names, values, strict=True)))


class DirectStatement:
    """``rows(conn, params)``: what ``conn.execute(sql, params).fetchall()`` returns (dict
    rows), through libpq directly; through that very call for parameters libpq's text
    form cannot carry (``Unsuitable``)."""

    def __init__(self, name: str, sql: str, *, prepare: bool) -> None:
        self._sql = sql
        self._statement = Prepared(name, sql, prepare=prepare)

    def rows(self, conn: psycopg.Connection[Any], params: Mapping[str, Any]) -> list[Row]:
        try:
            values = self._statement.values(conn, params)
        except Unsuitable:
            return conn.execute(self._sql, params).fetchall()
        return retrying(conn, [self._statement], lambda: self._rows(conn, values))  # type: ignore[no-any-return]

    def _rows(self, conn: psycopg.Connection[Any], values: list[bytes | None]) -> list[Row]:
        with pipeline(conn):
            res = self._statement.result(conn, values)
        return dict_rows(conn, res)

    def send(self, conn: psycopg.Connection[Any], params: Mapping[str, Any]) -> Callable[[], list[Row]] | None:
        """``rows`` in two halves: the statement written now, and what reads its rows,
        which may run on another thread (one at a time: ``conn`` is the caller's until
        then).  None, with nothing sent, for parameters only ``rows`` can carry."""
        try:
            values = self._statement.values(conn, params)
        except Unsuitable:
            return None
        preparing = self._statement.send_apart(conn, values)

        def read() -> list[Row]:
            try:
                return self._statement.rows_apart(conn, preparing)
            except psycopg.Error as exc:
                if not session_lost(conn, [self._statement], exc):
                    raise
                # Refused before it ran (the session lacked the statement): once more.
                return self.rows(conn, params)

        return read


@contextmanager
def pipeline(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """libpq's pipeline mode on ``conn`` for the block (psycopg's lock held)."""
    with conn.lock:
        conn.pgconn.enter_pipeline_mode()
        try:
            yield
        finally:
            leave_pipeline(conn)


def send(pg: pq.abc.PGconn) -> None:
    """Write everything queued."""
    while pg.flush():
        _wait(pg.socket, select.POLLOUT)


def _wait(fd: int, events: int) -> None:
    # poll, not select: select refuses a descriptor above 1023 (FD_SETSIZE), which a
    # process with many connections or files reaches.
    poller = select.poll()
    poller.register(fd, events)
    poller.poll()


def next_result(pg: pq.abc.PGconn) -> pq.abc.PGresult:
    """The pipeline's next result, waiting for it (libpq ends each query's results with
    a NULL, skipped here; nothing follows the Sync's, so no caller reads past it)."""
    while True:
        if not pg.is_busy():  # parses what was read before: no system call
            res = pg.get_result()
            if res is not None:
                return res
            continue
        # Wait first, then read: a read before the wait would mostly find nothing yet,
        # one more system call per result (they cost 5-15 us on the VMs we measured).
        _wait(pg.socket, select.POLLIN)
        pg.consume_input()  # raises OperationalError when the connection broke


def check(conn: psycopg.Connection[Any], res: pq.abc.PGresult, expected: pq.ExecStatus) -> psycopg.Error | None:
    """None when ``res`` has the ``expected`` status, else the error it stands for."""
    if res.status == expected:
        return None
    if res.status == pq.ExecStatus.PIPELINE_ABORTED:
        return psycopg.errors.PipelineAborted("pipeline aborted")
    return psycopg.errors.error_from_result(res, encoding=conn.info.encoding)


def synced(conn: psycopg.Connection[Any]) -> None:
    """Read up to the Sync's answer; its transaction's error (a failed commit), if any,
    comes first and is raised."""
    pg = conn.pgconn
    error: psycopg.Error | None = None
    while True:
        res = next_result(pg)
        if res.status == pq.ExecStatus.PIPELINE_SYNC:
            break
        if res.status == pq.ExecStatus.FATAL_ERROR and error is None:
            error = psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
    if error is not None:
        raise error


def leave_pipeline(conn: psycopg.Connection[Any]) -> None:
    pg = conn.pgconn
    if pg.status != pq.ConnStatus.OK:
        return  # broken: the pool replaces it
    try:
        pg.exit_pipeline_mode()
    except psycopg.Error:
        # Results left unread (an exception between the send and the Sync's answer):
        # the session's state is unknown, so the pool must not hand it out again.
        conn.close()
