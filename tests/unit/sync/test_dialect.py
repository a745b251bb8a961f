"""`dialect.among`: the store's "column among these values" on each backend.

On PostgreSQL it is ``= ANY(:array)`` (one parameter, one statement text whatever the
count), elsewhere ``IN``; either selects exactly the rows whose value is listed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.sync import dialect
from connector_core.sync.database import connect_engine
from connector_core.sync.state import StateStore
from connector_core.sync.tables import Key
from connector_core.testing import TEST_LEDGER_KEY
from tests.unit.sync.conftest import statements

_metadata = sa.MetaData()
_probe = sa.Table(
    "among_probe",
    _metadata,
    sa.Column("n", sa.Integer(), primary_key=True),
    sa.Column("text", Key, nullable=False),
    sa.Column("number", sa.BigInteger(), nullable=False),
    sa.Column("blob", sa.LargeBinary(), nullable=False),
)

# PostgreSQL text holds no NUL; every other character, surrogates aside, may be a key
_texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)
_rows = st.lists(
    st.tuples(_texts, st.integers(-(2**63), 2**63 - 1), st.binary(max_size=6)), max_size=12
)


@pytest.fixture
def engine(state_url: str) -> Iterator[sa.Engine]:
    made = connect_engine(state_url)  # as the store makes it: on PostgreSQL, lists in binary
    _metadata.create_all(made)
    yield made
    _metadata.drop_all(made)
    made.dispose()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows, extra=_rows, data=st.data())
def test_among_selects_exactly_the_rows_listed(
    engine: sa.Engine,
    rows: list[tuple[str, int, bytes]],
    extra: list[tuple[str, int, bytes]],
    data: st.DataObject,
) -> None:
    """For text (the store's C-collated keys), integers and bytes: the rows whose value is
    among a list of some of the table's values and some others, none twice; an empty list
    selects nothing."""
    column = data.draw(st.sampled_from(["text", "number", "blob"]))
    at = {"text": 0, "number": 1, "blob": 2}[column]
    listed = data.draw(st.lists(st.sampled_from(rows), max_size=len(rows))) if rows else []
    values = [row[at] for row in listed + extra]
    with engine.begin() as conn:
        conn.execute(_probe.delete())
        if rows:
            conn.execute(
                _probe.insert(),
                [{"n": n, "text": t, "number": i, "blob": b} for n, (t, i, b) in enumerate(rows)],
            )
        where = dialect.among(conn, _probe.c[column], values)
        found = sorted(conn.scalars(sa.select(_probe.c.n).where(where)))
    assert found == [n for n, row in enumerate(rows) if row[at] in set(values)]


def test_a_bulk_read_sends_one_statement_text_whatever_the_count(state_url: str) -> None:
    """The read-ahead of 3 jobs' states and of 700 jobs' (two chunks of 500 and 200) send one
    statement text on PostgreSQL: a parameter of an array, not an IN of a placeholder per job
    (whose text, rendered and converted on every execution, changes with the count)."""
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        sent = statements(store, "FROM job_state")
        with store.joined():
            store.read_ahead([f"p{n}" for n in range(3)])
            assert store.job_state("p1").cursor is None
        with store.joined():
            store.read_ahead([f"p{n}" for n in range(700)])
            assert store.job_state("p699").cursor is None
        assert len(sent) == 3
        if store._pg:
            assert len(set(sent)) == 1
            assert "= any(" in sent[0].lower()
        else:
            assert len(set(sent)) == 3  # IN (?, ?, ?), and of 500, and of 200
