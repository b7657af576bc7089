"""JSON number rules shared by request validation and task-type validators.  No I/O."""

from __future__ import annotations

import math
from typing import Any


def as_int(value: Any) -> int | None:
    """JSON Schema's notion of an integer: any number without a fractional part
    (``3`` and ``3.0`` alike); ``None`` for anything else, booleans included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None
