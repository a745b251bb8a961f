"""The bulk insert path stores what SQLAlchemy's own statements store, for every column type
that converts its values (it bypasses SQLAlchemy's per-row processing on SQLite)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.sync import bulk
from connector_core.sync.tables import CompactTime, SecondTime

metadata = sa.MetaData()
times = sa.Table(
    "times",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("micros", CompactTime(), nullable=True),
    sa.Column("seconds", SecondTime(), nullable=True),
)
WHEN = st.datetimes(
    min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)


@settings(max_examples=100, deadline=None)
@given(when=st.lists(st.none() | WHEN, min_size=1, max_size=4))
def test_bulk_inserts_store_times_as_their_column_types_do(when: list[dt.datetime | None]) -> None:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    rows = [{"id": n, "micros": w, "seconds": w} for n, w in enumerate(when)]
    with engine.begin() as conn:
        bulk.insert_many(conn, times, rows)
        conn.execute(times.insert(), [{**row, "id": row["id"] + 100} for row in rows])
        raw: dict[int, Any] = {
            r.id: (r.micros, r.seconds) for r in conn.execute(sa.text("SELECT * FROM times"))
        }
        back = {r.id: (r.micros, r.seconds) for r in conn.execute(sa.select(times))}
    engine.dispose()
    for n, w in enumerate(when):
        assert raw[n] == raw[n + 100]
        assert back[n] == ((None, None) if w is None else (w, w.replace(microsecond=0)))
