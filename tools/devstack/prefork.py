"""Several local API processes on one listening socket, as a deployment has many
Lambda instances behind API Gateway: the API keeps no state between requests, so N
processes serve it as one.  One Python process runs its request threads one at a time
(the GIL), so a single API process can use at most one core however many it has.

The first process binds the port and forks the others before it starts a thread or
imports the app (``fork_workers``); they share its accept queue.  A shared socket
rather than one ``SO_REUSEPORT`` socket per process: the kernel spreads ``SO_REUSEPORT``
connections by a hash of their addresses, so 8 keep-alive clients could land 6 and 2
(a one-in-five chance with two processes) and leave one process saturated and one
idle; on a shared queue whichever process gets to ``accept`` first takes the
connection, and a busy one gets there later.  Nor can a second stack started by
mistake on the same port take half of this one's connections.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

from tools.devstack.orphans import SUPERVISOR_PID_ENV

LISTEN_BACKLOG = 128  # socketserver's default is 5: a burst of clients would see resets


def default_processes(cores: int | None = None) -> int:
    """One API process per two cores this process may run on, at least 1, at most 4.
    Not one per core: the API shares the machine with PostgreSQL, Redis, the drainers
    and whatever sends the load, and on 2 cores a second API process cost ~30 % more
    CPU per request for fewer requests/s (bench/RESULTS.md, rounds 6 and 7)."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
    return max(1, min(cores // 2, 4))


def bind(host: str, port: int) -> socket.socket:
    """The API's socket, bound (the port is ours) but not listening yet: until a process
    has the app loaded and calls ``start_listening``, a client is refused at once rather
    than left waiting in a queue nobody serves.  Shared by every process forked after this."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server: a restarted stack rebinds at once
    sock.bind((host, port))
    # Every process's selector wakes for a new connection and only one accept() gets it:
    # the others must get EAGAIN (socketserver ignores it) rather than block in accept(),
    # where they would also miss their own shutdown.  Accepted sockets are blocking
    # (Linux does not inherit O_NONBLOCK through accept).
    sock.setblocking(False)
    return sock


def start_listening(sock: socket.socket) -> None:
    """Accept connections on ``sock`` (each process calls it when it is ready to serve;
    the first call opens the one queue, the others change nothing)."""
    sock.listen(LISTEN_BACKLOG)


def fork_workers(count: int) -> list[int] | None:
    """Fork ``count - 1`` copies of this process.  In the parent: the children's pids;
    in a child: None.  Call before any thread starts (a fork copies only the calling
    thread, and any lock another thread held stays held in the copy)."""
    children: list[int] = []
    for _ in range(count - 1):
        pid = os.fork()
        if pid == 0:
            # Its parent is the first API process, not the supervisor: it stops with that
            # one (parent-death signal), which stops with the supervisor.
            os.environ[SUPERVISOR_PID_ENV] = str(os.getppid())
            return None
        children.append(pid)
    return children


def watch_workers(children: list[int], stop: threading.Event, on_exit: Callable[[int, int], None]) -> None:
    """Call ``on_exit(pid, status)`` and set ``stop`` when a child exits first: the
    stack then stops, as it does when its only API process dies."""

    def watch(pid: int) -> None:
        _, status = os.waitpid(pid, 0)
        if not stop.is_set():
            on_exit(pid, os.waitstatus_to_exitcode(status))
            stop.set()

    for pid in children:
        threading.Thread(target=watch, args=(pid,), name=f"api-worker-{pid}", daemon=True).start()


def stop_workers(children: list[int], timeout: float = 10.0) -> None:
    """SIGTERM the children (each stops in order, as on Ctrl-C) and wait for them."""
    from tools.devstack.services.common import pid_alive  # a zombie counts as gone

    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in children:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
