"""Children of the local stack stop when their supervisor is gone."""

from __future__ import annotations

import os
import threading


def stop_with_parent(stop: threading.Event, interval: float = 1.0) -> None:
    """Children run in sessions of their own (so Ctrl-C reaches only the supervisor,
    which stops them in order); if the supervisor is killed outright they would be
    orphans, so each one watches its parent and stops when it changes."""
    parent = os.getppid()

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
