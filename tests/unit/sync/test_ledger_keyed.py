"""The keyed ledger (issue #10, observation 4): forgery, truncation, a wiped ledger, the id map
cross-check, the frozen payload, the key, anchors and the upgrade of unkeyed ledgers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.errors import ConfigError
from connector_core.sync import ledger
from connector_core.sync.migrations import alembic_config
from connector_core.sync.model import AppliedChange
from connector_core.sync.state import StateStore
from connector_core.sync.tables import GENESIS_HASH
from connector_core.testing import TEST_LEDGER_KEY
from tests.unit.sync import tamper

Change = Callable[..., AppliedChange]
OTHER_KEY = b"another-ledger-key-of-some-other-network"
T0 = dt.datetime(2024, 5, 1, 10, 2, 3, 456789, tzinfo=dt.UTC)


@pytest.fixture
def five(store: StateStore, make_change: Change) -> StateStore:
    """A store whose ledger holds seq 1-5 (members 1-3, partner 1-2), all still shared."""
    store.record_batch(
        "members", "nc", "members.yaml", "p" * 64, [make_change(str(i)) for i in (1, 2, 3)]
    )
    store.record_batch(
        "partner", "csv", "partner.yaml", "q" * 64, [make_change("1"), make_change("2")]
    )
    return store


def _sql(engine: sa.Engine, *statements: str, **params: Any) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)


def _rechain(
    engine: sa.Engine, store: StateStore, version: int, key: bytes | None, edit: dict[str, Any]
) -> None:
    """Edit row 3 with `edit`, recompute every hash in format `version` with `key` (a forger's
    guess) and point the head at the new end, as someone with write access to the database would."""
    rows = [dataclasses.asdict(e) for e in store.ledger_entries()]
    rows[2].update(edit)
    prev = GENESIS_HASH
    with engine.begin() as conn:
        for row in rows:
            row["version"], row["prev_hash"] = version, prev
            row["row_hash"] = prev = ledger.row_hash(row, key)
        tamper.update_rows(conn, rows)
        conn.execute(sa.update(ledger.ledger_head).values(row_hash=prev, key_check=None))


@pytest.mark.parametrize(
    ("version", "key"), [(1, None), (2, OTHER_KEY)], ids=["unkeyed sha256", "guessed key"]
)
def test_a_chain_recomputed_after_an_edit_does_not_verify(
    five: StateStore, raw_engine: sa.Engine, version: int, key: bytes | None
) -> None:
    _rechain(raw_engine, five, version, key, {"reason": "shared:nothing to see"})
    report = five.verify_ledger()
    assert not report.ok
    assert report.problems


def test_a_cut_tail_with_the_head_moved_back_fails_against_an_anchor(
    five: StateStore, raw_engine: sa.Engine
) -> None:
    anchor = five.ledger_anchor()
    assert anchor == (5, list(five.ledger_entries())[-1].row_hash)
    third = list(five.ledger_entries())[2]
    _sql(
        raw_engine,
        "DELETE FROM ledger WHERE seq > 3",
        f"DELETE FROM id_map WHERE job = {tamper.job_id('partner')}",
        "UPDATE ledger_head SET seq = 3, row_hash = :digest",
        digest=third.row_hash,
    )
    assert five.verify_ledger().ok  # nothing inside the database can tell: hence anchors
    report = five.verify_ledger(expect=[anchor])
    assert not report.ok
    assert report.problems == [
        "anchor 5: the ledger has no seq 5 any more; it ends at seq 3 "
        "(rows deleted from the end, or the ledger restarted)"
    ]


def test_a_wiped_and_restarted_ledger_fails_against_an_anchor(
    five: StateStore, raw_engine: sa.Engine, make_change: Change
) -> None:
    anchors = [(3, list(five.ledger_entries())[2].row_hash), five.ledger_anchor()]
    _sql(
        raw_engine,
        "DELETE FROM ledger",
        "DELETE FROM id_map",
        f"UPDATE ledger_head SET seq = 0, row_hash = '{GENESIS_HASH}'",
    )
    five.record_batch("members", "nc", "members.yaml", "p" * 64, [make_change("9")] * 4)
    report = five.verify_ledger(expect=anchors)
    assert not report.ok
    assert report.problems == [
        "anchor 3: seq 3 now has another hash than the one written down "
        "(the ledger was rewritten up to there)",
        "anchor 5: the ledger has no seq 5 any more; it ends at seq 4 "
        "(rows deleted from the end, or the ledger restarted)",
    ]


def test_an_anchor_that_still_holds_passes(five: StateStore, make_change: Change) -> None:
    anchor = five.ledger_anchor()
    five.record_batch("members", "nc", "members.yaml", "p" * 64, [make_change("4")])
    assert five.verify_ledger(expect=[anchor, (0, GENESIS_HASH)]).ok


ID_MAP_TAMPERING: dict[str, tuple[Callable[[sa.Engine], None], str]] = {
    "row deleted": (
        lambda e: _sql(
            e, f"DELETE FROM id_map WHERE job = {tamper.job_id('members')} AND source_id = '2'"
        ),
        "job members: ledger seq 2 shared '2' and nothing took it back, but the id map lacks it "
        "(id map row deleted: a withdrawal would miss it)",
    ),
    "row inserted": (
        lambda e: tamper.copy_id_map_row(e, "members", "7", "key-7", "WHERE source_id = '3'"),
        "job members: id map holds '7', but no ledger row (id map row inserted)",
    ),
    "key edited": (
        lambda e: tamper.set_target_key(e, "partner", "1", "elsewhere"),
        "job partner: id map holds '1' under another key than ledger seq 4 (id map row edited)",
    ),
}


@pytest.mark.parametrize("kind", list(ID_MAP_TAMPERING))
def test_verify_cross_checks_the_id_map(five: StateStore, raw_engine: sa.Engine, kind: str) -> None:
    edit, problem = ID_MAP_TAMPERING[kind]
    edit(raw_engine)
    report = five.verify_ledger()
    assert (report.ok, report.problems) == (False, [problem])


def test_a_record_taken_back_must_be_gone_from_the_id_map(
    five: StateStore, raw_engine: sa.Engine, make_change: Change
) -> None:
    five.record_batch("members", "nc", "members.yaml", "p" * 64, [make_change("2", "delete")])
    assert five.verify_ledger().ok
    where = f"WHERE job = {tamper.job_id('members')} AND source_id = '1'"
    tamper.copy_id_map_row(raw_engine, "members", "2", "key-2", where)
    assert five.verify_ledger().problems == [
        "job members: id map holds '2', but ledger seq 6 took it back (id map row inserted)"
    ]


ACTIONS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["create", "update", "delete"])),
    max_size=12,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(ACTIONS, max_size=4))
def test_the_id_map_of_any_history_agrees_with_its_ledger(
    store: StateStore, make_change: Change, batches: list[list[tuple[str, str]]]
) -> None:
    job = f"job{ledger.key_check(repr(batches).encode())[:8]}"  # a fresh job per example
    for batch in batches:
        changes = [
            make_change(sid, action, key=f"{sid}-{n}") for n, (sid, action) in enumerate(batch)
        ]
        store.record_batch(job, "nc", "p.yaml", "p" * 64, changes)
    report = store.verify_ledger()
    assert report.ok, report.problems


# -- the frozen payload ------------------------------------------------------------------

FIXED_ROW: dict[str, Any] = {
    "version": 2,
    "seq": 7,
    "at": T0,
    "job": "members",
    "target": "nextcloud",
    "record_key": "key-1",
    "source_id": "1",
    "action": "create",
    "fields": {"email": "show", "phone": "mask:last4"},
    "policy": "members.yaml",
    "policy_hash": "p" * 64,
    "consent_basis": {"contact_me": {"granted": True, "source": "civicrm", "at": "2024-05-01"}},
    "approvals": [],
    "reason": "shared:members",
    "prev_hash": "a" * 64,
}
GOLDEN_V2 = "e88ad0a9851d4563da11beee7bec20baac9d51d1d49e3675def0e6a313abaa10"
GOLDEN_V1 = "e4418a8692d26b7cf1721f1c41ab942d08616dda21b6e6d1fdc6af0aff6ac32c"  # as before the key


def test_the_keyed_format_is_frozen() -> None:
    assert ledger.row_hash(FIXED_ROW, TEST_LEDGER_KEY) == GOLDEN_V2
    assert ledger.PAYLOADS[2] == (
        "version",
        "seq",
        "at",
        "job",
        "target",
        "record_key",
        "source_id",
        "action",
        "fields",
        "policy",
        "policy_hash",
        "consent_basis",
        "approvals",
        "reason",
        "prev_hash",
    )


GOLDEN_V3 = "bfba0afc9535a400318fd9436408a77224ac52e0e93d4131ab58b1d0f69ea7d1"


def test_the_compact_format_is_frozen() -> None:
    """Format 3 (schema 0008): the JSON array of its parts, the entry's columns one object."""
    row = {**FIXED_ROW, "version": 3}
    assert ledger.row_hash(row, TEST_LEDGER_KEY) == GOLDEN_V3
    assert ledger.PAYLOADS[3] == (
        "version",
        "seq",
        "at",
        "record_key",
        "source_id",
        "entry",
        "consent_basis",
        "prev_hash",
    )
    assert ledger.ENTRY == (
        "job",
        "target",
        "action",
        "fields",
        "policy",
        "policy_hash",
        "approvals",
        "reason",
    )
    covered = {*ledger.PAYLOADS[3], *ledger.ENTRY} - {"entry"}
    assert covered == set(ledger.COLUMNS) - {"row_hash"}


GOLDEN_V4 = "220c3c2ff15b50a18f94453ce2a415dd"


def test_the_short_format_is_frozen() -> None:
    """Format 4: format 3's payload with 4 as its version, HMAC-SHA256 cut to 128 bits."""
    row = {**FIXED_ROW, "version": 4}
    assert ledger.PAYLOADS[4] == ledger.PAYLOADS[3]
    assert ledger.payload(row, 4) == b"[4" + ledger.payload({**row, "version": 3}, 3)[2:]
    assert ledger.row_hash(row, TEST_LEDGER_KEY) == GOLDEN_V4
    full = hmac.new(TEST_LEDGER_KEY, ledger.payload(row, 4), hashlib.sha256).hexdigest()
    assert full[:32] == GOLDEN_V4


def test_new_rows_are_short_and_chain_on_from_full_length_ones(
    store: StateStore, make_change: Change, raw_engine: sa.Engine
) -> None:
    """A store upgraded with format 3 rows goes on with format 4 rows: the chain verifies
    across the seam, and an edit on either side of it is still caught."""
    store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change(str(i)) for i in (1, 2)])
    rows = [dataclasses.asdict(e) for e in store.ledger_entries()]
    assert {r["version"] for r in rows} == {4}
    assert {len(r["row_hash"]) for r in rows} == {32}
    prev = GENESIS_HASH
    with raw_engine.begin() as conn:  # as a store written before format 4 holds them
        for row in rows:
            row["version"], row["prev_hash"] = 3, prev
            row["row_hash"] = prev = ledger.row_hash(row, TEST_LEDGER_KEY)
        tamper.update_rows(conn, rows)
        conn.execute(sa.update(ledger.ledger_head).values(row_hash=prev))
    store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change(str(i)) for i in (3, 4)])
    entries = list(store.ledger_entries())
    assert [e.version for e in entries] == [3, 3, 4, 4]
    assert [len(e.row_hash) for e in entries] == [64, 64, 32, 32]
    assert entries[2].prev_hash == entries[1].row_hash
    report = store.verify_ledger(expect=[store.ledger_anchor()])
    assert report.ok, report.problems
    for seq in (2, 3):
        tamper.edit(raw_engine, store, seq, source_id="forged")
        assert not store.verify_ledger().ok


TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=2**62),
    record_key=TEXT,
    source_id=TEXT,
    fields=st.dictionaries(TEXT, TEXT, max_size=4),
    basis=st.dictionaries(TEXT, JSONISH, max_size=3),
    reason=TEXT,
)
def test_the_compact_payload_is_the_canonical_json_of_its_parts(
    seq: int,
    record_key: str,
    source_id: str,
    fields: dict[str, str],
    basis: dict[str, Any],
    reason: str,
) -> None:
    """What append writes from its parts is what a verifier rebuilds with plain JSON."""
    row = {
        **FIXED_ROW,
        "version": 3,
        "seq": seq,
        "record_key": record_key,
        "source_id": source_id,
        "fields": fields,
        "consent_basis": basis,
        "reason": reason,
    }
    entry = {name: row[name] for name in ledger.ENTRY}
    parts = [3, seq, ledger.timestamp(T0), record_key, source_id, entry, basis, row["prev_hash"]]
    expected = ledger.canonical_json(parts).encode("utf-8", "surrogatepass")
    assert ledger.payload(row, 3) == expected


def test_the_unkeyed_format_is_frozen() -> None:
    row = {**FIXED_ROW, "version": 1}
    assert ledger.row_hash(row, None) == GOLDEN_V1
    assert ledger.row_hash(row, OTHER_KEY) == GOLDEN_V1


def test_a_new_column_changes_no_hash() -> None:
    """What is hashed is the format's frozen tuple, not whatever columns a row has."""
    for version in (1, 2):
        row = {**FIXED_ROW, "version": version}
        assert ledger.row_hash({**row, "new_column": "x"}, TEST_LEDGER_KEY) == ledger.row_hash(
            row, TEST_LEDGER_KEY
        )


def test_the_hash_is_keyed() -> None:
    assert ledger.row_hash(FIXED_ROW, OTHER_KEY) != ledger.row_hash(FIXED_ROW, TEST_LEDGER_KEY)
    with pytest.raises(ValueError, match="unknown ledger row format 5"):
        ledger.row_hash({**FIXED_ROW, "version": 5}, TEST_LEDGER_KEY)


# -- the key -----------------------------------------------------------------------------


def test_recording_without_a_key_is_refused_and_writes_nothing(
    state_url: str, make_change: Change
) -> None:
    with StateStore.open(state_url) as store:
        with pytest.raises(ledger.LedgerKeyError, match="no ledger key was given") as caught:
            store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("1")])
        assert "connector credentials set network ledger_key" in (caught.value.hint or "")
        assert store.mapped("members", ["1"]) == {}
        with pytest.raises(ledger.LedgerKeyError):
            store.verify_ledger()
        with pytest.raises(ledger.LedgerKeyError):
            store.check_ledger_writable()


def test_a_short_key_is_refused(state_url: str, make_change: Change) -> None:
    with (
        StateStore.open(state_url, ledger_key=b"short") as store,
        pytest.raises(ledger.LedgerKeyError, match="shorter than 16 bytes"),
    ):
        store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("1")])


def test_another_key_is_told_apart_from_tampering(
    five: StateStore, state_url: str, make_change: Change
) -> None:
    assert five.ledger_keyed()
    with StateStore.open(state_url, ledger_key=OTHER_KEY) as other:
        report = other.verify_ledger()
        assert report.problems == [
            "the ledger key given is not the one this ledger was written with"
        ]
        with pytest.raises(ledger.LedgerKeyError, match="not the one this ledger was written"):
            other.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("9")])
        with pytest.raises(ledger.LedgerKeyError):
            other.check_ledger_writable()
        assert other.mapped("members", ["9"]) == {}
    assert five.verify_ledger().ok


def test_a_fresh_ledger_is_not_keyed_until_written(store: StateStore, make_change: Change) -> None:
    assert not store.ledger_keyed()
    store.check_ledger_writable()
    store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("1")])
    assert store.ledger_keyed()
    assert next(store.ledger_entries()).version == ledger.CURRENT == 4


# -- upgrading an unkeyed ledger -----------------------------------------------------------


def _unkeyed(engine: sa.Engine, store: StateStore) -> None:
    """Turn the store's ledger into what the connector wrote before the ledger key."""
    _rechain(engine, store, 1, None, {})


def test_an_unkeyed_ledger_is_migrated_once_by_an_admin(
    five: StateStore, raw_engine: sa.Engine, make_change: Change
) -> None:
    _unkeyed(raw_engine, five)
    assert not five.ledger_keyed()
    assert five.verify_ledger().problems == [
        "seq 1-5: unkeyed (format 1) rows, which anyone could have written; "
        "`connector ledger migrate` re-chains a ledger written before the ledger key"
    ]
    with pytest.raises(ledger.LedgerNeedsMigration, match="written before the ledger key"):
        five.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("9")])
    with pytest.raises(ledger.LedgerNeedsMigration):
        five.check_ledger_writable()
    assert five.migrate_ledger() == 5
    assert [e.version for e in five.ledger_entries()] == [ledger.CURRENT] * 5
    assert five.verify_ledger().ok
    assert five.migrate_ledger() == 0
    five.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("9")])
    assert five.verify_ledger().ok


def test_unkeyed_rows_forged_after_the_migration_do_not_verify(
    five: StateStore, raw_engine: sa.Engine, make_change: Change
) -> None:
    _rechain(raw_engine, five, 1, None, {"reason": "forged"})
    five.migrate_ledger()  # the admin's one migration (of a ledger forged before it: see docs)
    _rechain(raw_engine, five, 1, None, {"reason": "forged again"})  # and a second forgery
    assert not five.verify_ledger().ok
    with pytest.raises(ledger.LedgerNeedsMigration):
        five.check_ledger_writable()


def test_unkeyed_rows_next_to_keyed_ones_are_not_migrated(
    five: StateStore, raw_engine: sa.Engine
) -> None:
    row = dataclasses.asdict(list(five.ledger_entries())[-1])
    row.update(seq=6, prev_hash=row["row_hash"], version=1, reason="forged")
    row["row_hash"] = ledger.row_hash(row, None)
    with raw_engine.begin() as conn:
        tamper.insert_rows(conn, [row])
        conn.execute(sa.update(ledger.ledger_head).values(seq=6, row_hash=row["row_hash"]))
    problems = five.verify_ledger().problems
    assert any(p.startswith("seq 6: unkeyed (format 1) rows") for p in problems), problems
    with pytest.raises(ledger.LedgerBroken, match="next to keyed ones"):
        five.migrate_ledger()


def test_a_broken_unkeyed_ledger_is_not_migrated(five: StateStore, raw_engine: sa.Engine) -> None:
    _unkeyed(raw_engine, five)
    tamper.edit(raw_engine, five, 2, target="elsewhere")
    with pytest.raises(ledger.LedgerBroken, match="does not verify, so it is not re-chained"):
        five.migrate_ledger()
    assert [e.version for e in five.ledger_entries()] == [1] * 5


def test_the_schema_migration_marks_old_rows_unkeyed(state_url: str, make_change: Change) -> None:
    """A store at revision 0002 with a row hashed as the connector did then."""
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        row = {k: v for k, v in FIXED_ROW.items() if k != "version"}
        row.update(seq=1, prev_hash=GENESIS_HASH)
        payload = ledger.canonical_json({**row, "at": ledger.timestamp(T0)})
        row["row_hash"] = hashlib.sha256(payload.encode()).hexdigest()
        conn.execute(sa.text("DELETE FROM ledger_head"))
        conn.execute(
            sa.text("INSERT INTO ledger_head (id, seq, row_hash) VALUES (1, 1, :h)"),
            {"h": row["row_hash"]},
        )
        table = sa.Table("ledger", sa.MetaData(), autoload_with=conn)
        conn.execute(sa.insert(table), row)
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        assert [e.version for e in store.ledger_entries()] == [1]
        assert store.migrate_ledger() == 1
        store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("2")])
        # the id map row that the old connector wrote with the ledger row
        tamper.copy_id_map_row(engine, "members", "1", "key-1")
        report = store.verify_ledger()
        assert (report.ok, report.checked) == (True, 2), report.problems
    engine.dispose()


# -- anchors -------------------------------------------------------------------------------


def test_anchors_are_appended_and_read_back(tmp_path: Path, five: StateStore) -> None:
    path = tmp_path / "anchors.log"
    seq, digest = five.ledger_anchor()
    line = ledger.export_anchor(path, seq, digest, now=T0)
    assert line == f"2024-05-01T10:02:03.456789+00:00 5:{digest}"
    ledger.export_anchor(path, 0, GENESIS_HASH, now=T0)
    assert path.read_text().splitlines() == [
        line,
        f"2024-05-01T10:02:03.456789+00:00 0:{GENESIS_HASH}",
    ]
    assert ledger.read_anchors(path) == [(5, digest), (0, GENESIS_HASH)]
    assert five.verify_ledger(expect=ledger.read_anchors(path)).ok


@pytest.mark.parametrize(
    "bad", ["5", "x:" + "a" * 64, "5:" + "a" * 63, "5:" + "a" * 48, "5:" + "g" * 64]
)
def test_a_malformed_anchor_line_names_its_place(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "anchors.log"
    path.write_text(f"# anchors\n\n2024-05-01T10:00:00+00:00 5:{'a' * 64}\n2024 {bad}\n")
    with pytest.raises(ConfigError, match=f"{path}:4: .* is not SEQ:HASH"):
        ledger.read_anchors(path)


@given(
    seq=st.integers(min_value=0, max_value=2**62),
    digest=st.binary(min_size=16, max_size=16) | st.binary(min_size=32, max_size=32),
)
def test_anchors_round_trip(seq: int, digest: bytes) -> None:
    assert ledger.parse_anchor(ledger.format_anchor(seq, digest.hex())) == (seq, digest.hex())


def test_an_undecodable_anchor_line_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "anchors.log"
    path.write_bytes(f"2024-05-01T10:00:00+00:00 5:{'a' * 64}\n2024 6:\xff\xfe\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"{path}:2: .* is not SEQ:HASH"):
        ledger.read_anchors(path)
    with pytest.raises(ConfigError, match=f"{path}:2: .* is not SEQ:HASH"):
        ledger.last_anchor(path)


_ANCHOR_LINE = st.builds(
    lambda seq, digest: f"2024-05-01T10:00:00+00:00 {seq}:{digest.hex()}",
    st.integers(min_value=0, max_value=2**40),
    st.binary(min_size=32, max_size=32),
)
_OTHER_LINE = st.sampled_from(["", "   ", "# a note"]) | st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=300,
).map(lambda text: "# " + text)


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(_ANCHOR_LINE | _OTHER_LINE, max_size=120),
    newline=st.sampled_from(["\n", "\r\n"]),
    final=st.booleans(),
)
def test_the_last_anchor_is_the_last_line_read_whole(
    lines: list[str], newline: str, final: bool
) -> None:
    """Read from the file's end, whatever its size: the same as the last of every anchor."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "anchors.log"
        path.write_bytes((newline.join(lines) + (newline if final else "")).encode())
        every = ledger.read_anchors(path)
        assert ledger.last_anchor(path) == (every[-1] if every else None)


def test_a_bad_last_anchor_line_is_named_and_a_missing_file_holds_none(tmp_path: Path) -> None:
    path = tmp_path / "anchors.log"
    assert ledger.last_anchor(path) is None
    good = f"2024-05-01T10:00:00+00:00 5:{'a' * 64}\n"
    path.write_text(good * 200 + "2024 5:\n")
    with pytest.raises(ConfigError, match=f"{path}:201: .* is not SEQ:HASH"):
        ledger.last_anchor(path)
    path.write_text("2024 5:\n" + good)  # only the newest line is read
    assert ledger.last_anchor(path) == (5, "a" * 64)
