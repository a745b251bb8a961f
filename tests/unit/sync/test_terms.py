"""Terms are found again by repr: equal JSON gives one id, anything else another, and a
rolled-back transaction leaves nothing cached."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector_core.sync.tables import metadata, terms
from connector_core.sync.terms import Terms, canonical_json

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


def _engine() -> sa.Engine:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine, tables=[terms])
    return engine


@settings(max_examples=100, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=8))
def test_equal_json_is_one_term_and_different_json_another(values: list[Any]) -> None:
    engine, cache = _engine(), Terms()
    with engine.begin() as conn:
        found = cache.intern_texts(conn, "consent", values)
        again = cache.intern_texts(conn, "consent", list(reversed(values)))
    cache.settle()
    assert [text for _id, text in found] == [canonical_json(v) for v in values]
    assert list(reversed(found)) == again
    by_text = {text: id_ for id_, text in found}
    assert len(set(by_text.values())) == len(by_text)  # one id per distinct text
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(terms.c.value, terms.c.id)).all())
    assert stored == by_text


def test_types_json_tells_apart_are_told_apart() -> None:
    engine, cache = _engine(), Terms()
    values = [{"a": 1, "b": True}, {"b": True, "a": 1}, {"a": 1, "b": 1}, {"a": 1.0, "b": True}]
    with engine.begin() as conn:
        ids = cache.intern(conn, "consent", values)
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3


def test_a_rolled_back_term_is_not_remembered() -> None:
    engine, cache = _engine(), Terms()
    try:
        with engine.begin() as conn:
            cache.intern(conn, "job", ["members"])
            raise RuntimeError("rolled back")
    except RuntimeError:
        cache.discard()
    with engine.begin() as conn:
        (job,) = cache.intern(conn, "job", ["members"])
        assert conn.scalar(sa.select(terms.c.id).where(terms.c.value == '"members"')) == job
    cache.settle()
    with engine.connect() as conn:
        assert cache.find(conn, "job", "members") == job
        assert cache.find(conn, "job", "partner") is None


#: any text, lone surrogates (undecodable bytes a source kept) and NULs included
ANY_TEXT = st.text(st.characters(), max_size=4)
ANY_VALUES = st.recursive(
    st.none() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(ANY_VALUES)
@example({"source": "crm\ud800"})
@example(["caf\udce9", "\x00", {"\udfff": "é"}])
def test_canonical_json_is_text_a_store_holds_and_reads_back_the_same(value: Any) -> None:
    """What the ledger hashes and the terms table stores: valid UTF-8 whatever the value
    holds (a lone surrogate is written as its JSON escape), the same value when read back,
    and the text it always was for a value without lone surrogates."""
    text = canonical_json(value)
    text.encode("utf-8")  # strict: no lone surrogate is left in it
    assert json.loads(text) == value
    plain = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in plain):
        assert text == plain
    engine, cache = _engine(), Terms()
    with engine.begin() as conn:
        ((_, stored),) = cache.intern_texts(conn, "consent", [value])
    assert stored == text
