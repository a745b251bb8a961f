"""The bulk insert path stores what SQLAlchemy's own statements store, for every column type
that converts its values (it bypasses SQLAlchemy's per-row processing on SQLite)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import insert as pg_insert

from connector_core.records import storable_text, usable_id
from connector_core.sync import bulk
from connector_core.sync.tables import (
    CompactTime,
    Message,
    SecondTime,
    id_map,
    intents,
    job_state,
    ledger,
    runs,
)

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


# -- PostgreSQL: COPY ---------------------------------------------------------------------


@pytest.fixture
def pg_engine(pg_database: str) -> Any:
    engine = sa.create_engine(pg_database, poolclass=sa.NullPool)
    yield engine
    engine.dispose()


#: any id the engine keeps (usable_id: no NUL, no lone surrogate), controls included
KEYS = st.text(min_size=1, max_size=6).filter(usable_id)
LEDGER_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "at": WHEN,
            "record_key": st.binary(min_size=1, max_size=20),
            "source_id": KEYS,
            "entry": st.integers(0, 2**31 - 1),
            "consent": st.integers(0, 2**31 - 1),
            "row_hash": st.binary(min_size=16, max_size=16),
            "version": st.integers(1, 4),
        }
    ),
    min_size=1,
    max_size=5,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=LEDGER_ROWS)
def test_a_copy_to_postgresql_stores_what_an_insert_stores(
    pg_engine: sa.Engine, rows: list[dict[str, Any]]
) -> None:
    """Rows that cannot conflict (the ledger's) go in with COPY on PostgreSQL: each value
    through its column type's bind processing, as SQLAlchemy's INSERT sends it."""
    copied, inserted = _tables(pg_engine, ledger)
    numbered = [{"seq": n, **row} for n, row in enumerate(rows, start=1)]
    with pg_engine.begin() as conn:
        bulk.insert_many(conn, copied, numbered)
        conn.execute(inserted.insert(), numbered)
        raw = [
            conn.execute(sa.text(f"SELECT * FROM {t.schema}.ledger ORDER BY seq")).all()
            for t in (copied, inserted)
        ]
        back = conn.execute(sa.select(copied).order_by(copied.c.seq)).all()
    assert raw[0] == raw[1]
    assert [r._asdict() for r in back] == numbered


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=4) | st.sampled_from(["a\x00", "\ud800", "caf\udce9"]))
def test_the_ids_the_engine_keeps_are_the_texts_both_stores_hold(
    pg_engine: sa.Engine, text: str
) -> None:
    """usable_id, the one rule for which ids a run keeps (the others are read problems),
    says yes exactly to the texts SQLite and PostgreSQL both take as text and give back."""
    held = []
    for engine in (sa.create_engine("sqlite://"), pg_engine):
        try:
            with engine.connect() as conn:
                back = conn.execute(sa.select(sa.literal(text, sa.String()))).scalar()
            held.append(back == text)
        except (UnicodeEncodeError, sa.exc.DataError):
            held.append(False)
    assert usable_id(text) == all(held)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(st.characters(), max_size=6))
@example(text="caf\udce9 \ud800 \x00 é")
def test_free_text_reaches_both_stores_escaped_only_where_it_must(
    pg_engine: sa.Engine, text: str
) -> None:
    """A Message column (a target's error, a note) takes any text on both stores: a NUL or
    a lone surrogate comes back as its escape, everything else as it was."""
    for engine in (sa.create_engine("sqlite://"), pg_engine):
        with engine.connect() as conn:
            back = conn.execute(sa.select(sa.literal(text, Message()))).scalar()
        assert back == storable_text(text)
    assert (storable_text(text) == text) == (usable_id(text) or text == "")


INTENT_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "job": KEYS,
            "at": WHEN,
            "changes": st.lists(
                st.tuples(KEYS, KEYS, st.sampled_from(["upsert", "delete"]), st.none() | KEYS)
            ),
        }
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=INTENT_ROWS, after=st.integers(0, 3))
def test_rows_inserted_by_arrays_get_their_ids_in_order_and_store_what_an_insert_stores(
    pg_engine: sa.Engine, rows: list[dict[str, Any]], after: int
) -> None:
    """Runs and intents go in by one statement of arrays on PostgreSQL (insert_ids): each
    row's id is handed back at its place, and the rows are stored as SQLAlchemy's INSERT
    ... RETURNING stores them."""
    arrays, inserted = _tables(pg_engine, intents)
    rows = [{**row, "changes": [list(change) for change in row["changes"]]} for row in rows]
    with pg_engine.begin() as conn:
        for table in (arrays, inserted):  # ids already taken: the new ones follow them
            for _ in range(after):
                conn.execute(table.insert(), rows[0])
        ids = bulk.insert_ids(conn, arrays, rows)
        statement = inserted.insert().returning(inserted.c.id, sort_by_parameter_order=True)
        expected = [row.id for row in conn.execute(statement, rows)]
        stored = [
            conn.execute(sa.text(f"SELECT * FROM {t.schema}.intents ORDER BY id")).all()
            for t in (arrays, inserted)
        ]
        back = {r.id: r for r in conn.execute(sa.select(arrays))}
    assert ids == expected == list(range(after + 1, after + len(rows) + 1))
    assert stored[0] == stored[1]
    assert [{k: getattr(back[n], k) for k in rows[0]} for n in ids] == rows


def _tables(engine: sa.Engine, table: sa.Table) -> tuple[sa.Table, sa.Table]:
    """Two empty copies of `table`, each in a schema of its own."""
    return _pairs(engine, table)[0]


def _pairs(engine: sa.Engine, *tables: sa.Table) -> list[tuple[sa.Table, sa.Table]]:
    """Two empty copies of each of `tables`: one set in a schema, one in another."""
    found = sa.MetaData()
    with engine.begin() as conn:
        for schema in ("copied", "inserted"):
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    pairs = [
        (table.to_metadata(found, schema="copied"), table.to_metadata(found, schema="inserted"))
        for table in tables
    ]
    found.create_all(engine)
    return pairs


ID_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "job": st.integers(1, 2),
            "source_id": st.sampled_from(["1", "2", "é", "x\\ty"]),
            "target_key": st.binary(min_size=1, max_size=8),
            "projection_hash": st.none() | st.binary(min_size=16, max_size=16),
            "shape": st.integers(0, 9),
            "consent": st.integers(0, 9),
            "field_hashes": st.none() | st.binary(max_size=8),
            "updated_at": WHEN,
        }
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda row: (row["job"], row["source_id"]),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=ID_ROWS, second=ID_ROWS)
def test_an_upsert_through_a_copy_on_postgresql_stores_what_an_upsert_stores(
    pg_engine: sa.Engine, first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> None:
    """Upserts (id map rows) on PostgreSQL: copied into a temporary table, then inserted
    from it, replacing the rows already there; as SQLAlchemy's own upsert would, batch
    after batch in one transaction."""
    copied, inserted = _tables(pg_engine, id_map)
    key = ("job", "source_id")
    with pg_engine.begin() as conn:
        for rows in (first, second):
            bulk.insert_many(conn, copied, rows, conflict=key)
            stmt = pg_insert(inserted)
            excluded = {c: stmt.excluded[c] for c in rows[0] if c not in key}
            conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=excluded), rows)
        raw = [
            conn.execute(sa.text(f"SELECT * FROM {t.schema}.id_map ORDER BY 1, 2")).all()
            for t in (copied, inserted)
        ]
    assert raw[0] == raw[1]
    assert len(raw[0]) == len({(r["job"], r["source_id"]) for r in first + second})


TEXT = st.none() | st.text(max_size=6)  # lone surrogates and NULs too: Message escapes them
STATE_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "v_job": st.sampled_from(["a", "b", "é", "x\\ty", "c d"]),
            "v_cursor": st.none()
            | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
            "v_policy_hash": st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
            "v_last_run_at": st.none() | WHEN,
        }
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda row: row["v_job"],
)
END_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "v_id": st.integers(1, 6),  # 5 and 6: no such run, nothing written
            "v_finished_at": st.none() | WHEN,
            "v_status": st.sampled_from(["ok", "aborted", "refused"]),
            "v_counts": st.none() | st.dictionaries(st.text(max_size=4), st.integers(0, 9)),
            "v_error": TEXT,
        }
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda row: row["v_id"],
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=STATE_ROWS, second=STATE_ROWS, ends=END_ROWS)
def test_writes_by_arrays_on_postgresql_store_what_their_statements_store(
    pg_engine: sa.Engine,
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
    ends: list[dict[str, Any]],
) -> None:
    """A group's held-back job states go in by one upsert of arrays, its runs' ends by one
    update of arrays (write_arrays): the tables hold what SQLAlchemy's own upsert and
    update, row by row, make of the same rows (times, free text escaped, JSON, NULLs)."""
    states, ended = _pairs(pg_engine, job_state, runs)
    started = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with pg_engine.begin() as conn:
        for table in ended:
            for n in range(1, 5):
                row = {"id": n, "job": "j", "started_at": started, "status": "running"}
                conn.execute(table.insert(), {**row, "dry_run": False})
        arrays, rows = states
        for batch in (first, second):
            bulk.write_arrays(conn, arrays, "job", batch)
            names = [k.removeprefix("v_") for k in batch[0]]
            stmt = pg_insert(rows).values(
                {n: sa.bindparam(f"v_{n}", type_=rows.c[n].type) for n in names}
            )
            excluded = {n: stmt.excluded[n] for n in names if n != "job"}
            conn.execute(stmt.on_conflict_do_update(index_elements=["job"], set_=excluded), batch)
        arrays, rows = ended
        bulk.write_arrays(conn, arrays, "id", ends, update=True)
        names = [k.removeprefix("v_") for k in ends[0] if k != "v_id"]
        values = {n: sa.bindparam(f"v_{n}", type_=rows.c[n].type) for n in names}
        conn.execute(rows.update().where(rows.c.id == sa.bindparam("v_id")).values(values), ends)
        found = [
            [
                conn.execute(sa.text(f"SELECT * FROM {t.schema}.{t.name} ORDER BY 1")).all()
                for t in pair
            ]
            for pair in (states, ended)
        ]
    assert found[0][0] == found[0][1]
    assert found[1][0] == found[1][1]
    assert len(found[0][0]) == len({row["v_job"] for row in first + second})
