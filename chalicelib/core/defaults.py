"""Per-task-type defaults: what a submission gets when the request does not say.

A task type may set its own ``max_retries``, ``timeout_seconds`` and ``priority``
(``registry.task(..., max_retries=5)`` or the declarations file); the request's
own value wins, then the type's, then the global setting
(``TASKLANE_DEFAULT_MAX_RETRIES``, ``TASKLANE_DEFAULT_TIMEOUT_SECONDS``, ``normal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.core.model import Priority

MAX_RETRIES_LIMIT = 100
MAX_TIMEOUT_SECONDS = 900  # Lambda's own ceiling


@dataclass(frozen=True)
class TaskDefaults:
    """A task type's defaults; ``None`` leaves the global default in force."""

    max_retries: int | None = None
    timeout_seconds: int | None = None
    priority: Priority | None = None

    @classmethod
    def checked(cls, *, max_retries: Any = None, timeout_seconds: Any = None, priority: Any = None) -> TaskDefaults:
        """Defaults within the API's own bounds; ``ValueError`` names the field that is not."""
        if max_retries is not None and not _int_within(max_retries, 0, MAX_RETRIES_LIMIT):
            raise ValueError(f"max_retries must be an integer from 0 to {MAX_RETRIES_LIMIT}, got {max_retries!r}")
        if timeout_seconds is not None and not _int_within(timeout_seconds, 1, MAX_TIMEOUT_SECONDS):
            raise ValueError(
                f"timeout_seconds must be an integer from 1 to {MAX_TIMEOUT_SECONDS}, got {timeout_seconds!r}"
            )
        level = None
        if priority is not None:
            try:
                level = Priority(priority)
            except ValueError:
                allowed = ", ".join(p.value for p in Priority)
                raise ValueError(f"priority must be one of {allowed}, got {priority!r}") from None
        return cls(max_retries, timeout_seconds, level)

    def as_dict(self) -> dict[str, Any]:
        """The defaults that are set, for listings (``GET /api/v1/task-types``)."""
        values = {"max_retries": self.max_retries, "timeout_seconds": self.timeout_seconds, "priority": self.priority}
        return {k: (v.value if isinstance(v, Priority) else v) for k, v in values.items() if v is not None}


NO_DEFAULTS = TaskDefaults()


def _int_within(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
