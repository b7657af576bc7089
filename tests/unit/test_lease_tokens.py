"""A drainer's lease tokens (``core.ids.lease_tokens``): unique UUIDs, one per batch."""

from __future__ import annotations

import itertools
import uuid

from chalicelib.core.ids import lease_tokens


def test_a_drainers_lease_tokens_are_distinct_version_4_uuids() -> None:
    tokens = list(itertools.islice(lease_tokens(), 1000))
    assert len(set(tokens)) == 1000
    for t in tokens[:3] + tokens[-3:]:
        parsed = uuid.UUID(t)
        assert str(parsed) == t and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_two_drainers_draw_different_tokens() -> None:
    a, b = lease_tokens(), lease_tokens()
    assert {next(a) for _ in range(10)}.isdisjoint({next(b) for _ in range(10)})
