"""Locks a forked child gets back unheld.

``os.fork`` copies a process with only the thread that forked: a lock another thread
held at that moment stays held in the child, and nothing there will release it.  A
worker forked from a threaded producer (``multiprocessing``'s fork start method, a
pre-fork server) would then block for good in the first call that waits for such a
lock: a flush of the pushes, a close.  What each lock guarded is the parent's (a
socket, a thread), and the objects holding them check the process id before using
it; the lock itself is what must be new.  ``core.ids`` resets its own the same way."""

from __future__ import annotations

import os
import threading
import weakref

_owners: weakref.WeakKeyDictionary[object, tuple[str, ...]] = weakref.WeakKeyDictionary()


def relock_after_fork(owner: object, *attrs: str) -> None:
    """In a forked child, give ``owner``'s locks named ``attrs`` back as new, unheld
    ``threading.Lock`` objects (for as long as ``owner`` lives)."""
    _owners[owner] = attrs


def _relock() -> None:
    for owner, attrs in list(_owners.items()):
        for attr in attrs:
            setattr(owner, attr, threading.Lock())


os.register_at_fork(after_in_child=_relock)
