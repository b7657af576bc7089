"""``Store.claim`` sends plain ids as an array literal (``claim_order.id_array``): an id that
would read as two elements is refused as a whole, as it was as a list."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chalicelib.container import Container
from chalicelib.core.errors import ValidationError
from chalicelib.core.model import Status
from chalicelib.services.submit import submit
from tests.helpers import request

TENANT = "claim-ids"
TOKEN = "00000000-0000-0000-0000-0000000000c1"


def test_plain_ids_are_claimed_in_the_order_asked(make_rt: Callable[..., Container]) -> None:
    rt = make_rt()
    ids = [submit(rt, TENANT, request()).task.id for _ in range(3)]
    asked = [ids[2], ids[0], ids[1]]
    assert [c.id for c in rt.store.claim(asked, TOKEN, 30, actor="t")] == asked


def test_an_id_holding_two_ids_claims_neither(make_rt: Callable[..., Container]) -> None:
    rt = make_rt()
    first, second = (submit(rt, TENANT, request()).task.id for _ in range(2))
    with pytest.raises(ValidationError):
        rt.store.claim([f"{first},{second}"], TOKEN, 30, actor="t")
    for tid in (first, second):
        assert rt.store.get_task(TENANT, tid).status is Status.QUEUED  # type: ignore[union-attr]
