"""The process-wide wiring: settings, store, queue, executors and retry policy.

Built lazily once per process (a cached factory), so a warm Lambda reuses its
connections and importing the app opens none.  Use cases take a ``Container``
argument; tests build their own instead of patching.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from chalicelib.adapters.aws.secrets import database_url, with_secrets
from chalicelib.adapters.postgres.store import Store
from chalicelib.adapters.redis.pusher import BackgroundPusher, HeldPush, OnError
from chalicelib.adapters.redis.queue import Queue
from chalicelib.adapters.redis.unawaited import UnawaitedPush
from chalicelib.config import Settings, get_settings
from chalicelib.core.forks import relock_after_fork
from chalicelib.core.retry import RetryPolicy
from chalicelib.execution.remote import registry_for
from chalicelib.tasktypes import Registry
from chalicelib.tasktypes.loading import load_task_types, task_limits

T = TypeVar("T")


@dataclass
class Container:
    settings: Settings
    store: Store
    queue: Queue
    registry: Registry
    retry: RetryPolicy
    _pusher: BackgroundPusher | None = field(default=None, init=False, repr=False, compare=False)
    _held_push: HeldPush | None = field(default=None, init=False, repr=False, compare=False)
    _unawaited: UnawaitedPush | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, settings: Settings) -> Container:
        settings = with_secrets(settings)
        # Built-ins, the team's modules and the declared targets; a mistake in any of
        # them stops here, loudly, before a connection is opened.
        types = load_task_types(settings)
        return cls(
            settings=settings,
            store=Store(
                database_url(settings),
                max_size=settings.pool_max_size,
                prepare=settings.db_prepared_statements,
                tcp_timeout_seconds=settings.db_tcp_timeout_seconds,
                webhook_max_retries=settings.webhook_max_retries,
                webhook_timeout_seconds=settings.webhook_timeout_seconds,
            ),
            queue=Queue.from_url(
                settings.redis_url,
                cluster=settings.redis_cluster,
                prefix=settings.redis_prefix,
                aging_seconds=settings.priority_aging_seconds,
                limits=task_limits(types, settings),
                partitions=settings.queue_partitions,
            ),
            registry=registry_for(types, settings),
            retry=RetryPolicy(
                base_seconds=settings.retry_base_seconds,
                max_seconds=settings.retry_max_seconds,
                jitter=settings.retry_jitter,
                max_snoozes=settings.max_snoozes,
            ),
        )

    def pusher(self, on_error: OnError) -> BackgroundPusher:
        """The process's background pusher for this queue (``submit_push=background``),
        started on first use; ``on_error`` reports a push that failed."""
        return self._once("_pusher", lambda: BackgroundPusher(self.queue, on_error))

    def unawaited_push(self, on_error: OnError) -> UnawaitedPush:
        """The process's unawaited pusher of lone tasks (``submit_push=background``); what
        it does not take, or cannot confirm, goes to ``pusher(on_error)``."""
        return self._once(
            "_unawaited", lambda: UnawaitedPush(self.queue, lambda tasks: self.pusher(on_error).push(tasks), on_error)
        )

    def held_push(self) -> HeldPush:
        """The process's inline pusher of lone tasks (``submit_push=inline``)."""
        return self._once("_held_push", lambda: HeldPush(self.queue))

    def _once(self, attr: str, build: Callable[[], T]) -> T:
        """The pusher kept in ``attr``, built on first use by one thread (double-checked:
        a submit's path takes no lock once it exists)."""
        found: T | None = getattr(self, attr)
        if found is None:
            with _lock:
                found = getattr(self, attr)
                if found is None:
                    found = build()
                    setattr(self, attr, found)
        return found

    def flush_pushes(self, timeout: float = 5.0) -> bool:
        """Wait for the background pushes handed in so far, the unawaited ones' replies
        included (True when there are none)."""
        settled = self._unawaited.settle(timeout) if self._unawaited is not None else True
        return (self._pusher.flush(timeout) if self._pusher is not None else True) and settled

    def close(self) -> None:
        if self._unawaited is not None:
            self._unawaited.close()  # before the pusher: it may hand tasks over to it
        if self._pusher is not None:
            self._pusher.close()
        if self._held_push is not None:
            self._held_push.close()
        self.store.close()


_lock = threading.Lock()
_runtime: Container | None = None


relock_after_fork(sys.modules[__name__], "_lock")  # a fork may copy it held (core/forks.py)


def get_container() -> Container:
    """The process's runtime, built on first use."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = Container.build(get_settings())
    return _runtime
