"""The spool of a deferred target's outcomes: every item back once, in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_core.sync import deferred
from connector_core.sync.deferred import Spool


@given(items=st.lists(st.binary(max_size=300) | st.integers(), max_size=40))
def test_a_spool_gives_every_item_back_once_in_order(items: list[object]) -> None:
    """Whether the items stay in memory or go to the spool's file (past IN_MEMORY bytes)."""
    spool: Spool[object] = Spool()
    for item in items:
        spool.add(item)
    assert len(spool) == len(items)
    assert list(spool.drain()) == items
    assert list(spool.drain()) == []
    assert len(spool) == 0


def test_a_spool_moves_to_its_file_past_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deferred, "IN_MEMORY", 1000)
    spool: Spool[bytes] = Spool()
    spool.add(b"x" * 10)
    assert not spool._file._rolled  # type: ignore[union-attr]
    spool.add(b"y" * 2000)
    assert spool._file._rolled  # type: ignore[union-attr]
    assert list(spool.drain()) == [b"x" * 10, b"y" * 2000]
    spool.add(b"z")
    spool.close()
    assert list(spool.drain()) == []
