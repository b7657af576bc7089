"""Random digits for ids and trace roots come from a buffer of ``os.urandom`` output
(``core.ids.random_hex``): no system call, so no release of the GIL, on most calls
(issue 14 round 10); never the same digits twice, in a thread or a forked child."""

from __future__ import annotations

import os
import re
import secrets
import threading

import pytest

from chalicelib.core import ids
from chalicelib.core.ids import new_ids, random_hex
from chalicelib.core.tracecontext import new_root, new_root_headers, new_span_id
from tests.helpers import in_forked_child


def test_single_submits_draw_from_the_system_once_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id and a trace root a submit: 200 of them cost one or two ``os.urandom`` calls,
    not 400 (each call was a release of the GIL the pusher thread took)."""
    draws = []
    real = secrets.token_hex

    def counting(nbytes: int) -> str:
        draws.append(nbytes)
        return real(nbytes)

    monkeypatch.setattr(secrets, "token_hex", counting)
    monkeypatch.setattr(os, "urandom", lambda n: pytest.fail("os.urandom per call"))  # new_root's old path
    got = [(new_ids(1)[0], new_root_headers(1)[0], new_root().root) for _ in range(200)]
    assert len(draws) <= 2
    flat = [x for triple in got for x in triple]
    assert len(set(flat)) == len(flat)


def test_digits_are_never_handed_out_twice_across_threads() -> None:
    out: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [random_hex(20) for _ in range(2000)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8000 and len(set(out)) == 8000
    assert all(re.fullmatch(r"[0-9a-f]{20}", d) for d in out)


def test_a_draw_larger_than_the_block_and_across_its_end() -> None:
    big = random_hex(ids._Randomness._BLOCK * 2 + 10)
    assert len(big) == ids._Randomness._BLOCK * 2 + 10
    parts = [random_hex(7) for _ in range(3000)]  # crosses refills
    assert all(len(p) == 7 for p in parts)
    assert re.fullmatch(r"[0-9a-f]{16}", new_span_id())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_buffer() -> None:
    random_hex(2)  # the parent holds a buffer with digits left
    child = in_forked_child(lambda: random_hex(32))
    assert len(child) == 32 and child != random_hex(32)
