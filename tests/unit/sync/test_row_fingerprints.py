"""Reads proportional to the changes (issue #13): a CSV source skips the rows it decided.

Each row the runner decided at its cursor is known by its fingerprint (saved with the
cursor); the next read decodes only new and changed rows, rows of repeated keys and changes
still outstanding, and lists the others by id. Whatever the edits, an incremental run ends
in the state a from-scratch full run reaches.
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from connector_csv import CsvAdapter
from connector_csv.columns import RowDecoder
from connector_csv.session import CsvWrites
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.adapters import Block, Capability, Page
from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.records import Record
from connector_core.sync.blocks import BlockKeeper, StoredBlocks
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.runner import RunResult
from connector_core.sync.state import SavedBlocks, StateStore, StateStoreError, split_ids
from connector_core.sync.tables import fingerprint_blocks, row_fingerprints
from connector_core.testing import crash

HEADER = ["id", "first_name", "city", "phone", "region", "local_ok"]
CONFIG = """\
version: 1
network: {name: Fingerprints, key_secret: {env: FINGERPRINT_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm:
    adapter: csv
    settings: {path: crm.csv, page_size: 3}
    mapping: {consent.local_organizing: local_ok}
  out: {adapter: csv, settings: {path: out.csv}}
jobs:
  north:
    source: crm
    target: out
    policy: north.yaml
    options: {batch_size: 2, max_delete: 100%}
"""
POLICY = """\
policy: north
require_consent: [local_organizing]
rules:
  - allow: in scope
    when: {region: {in: ["North"]}}
fields:
  first_name: show
  city: show
  phone: last4
"""


#: every test twice: with the CSV adapter's blocks as they are, and with small blocks
pytestmark = pytest.mark.usefixtures("block_size")


@pytest.fixture(autouse=True)
def _key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINGERPRINT_KEY_SECRET", "fingerprint test target-key secret")


class Side:
    """A network folder: connector.yaml, policy, the source and target files, a state store."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.url = url or f"sqlite:///{root / 'state.db'}"
        (root / "connector.yaml").write_text(CONFIG, encoding="utf-8")
        (root / "north.yaml").write_text(POLICY, encoding="utf-8")

    def write(self, lines: list[str]) -> None:
        (self.root / "crm.csv").write_text("".join(lines), encoding="utf-8", newline="")

    def load(self) -> LoadedJob:
        config = load_config(self.root / "connector.yaml", {"csv": CsvAdapter})
        return load_job(config, "north", context=MaskContext.with_key(b"fingerprint-key"))

    def run(self, **options: Any) -> RunResult:
        return crash.run_with_switch(self.load(), self.url, None, **options)

    def target(self) -> list[tuple[tuple[str, str], ...]]:
        path = self.root / "out.csv"
        if not path.exists():
            return []
        with path.open(encoding="utf-8", newline="") as text:
            return sorted(tuple(sorted(r.items())) for r in csv.DictReader(text))

    def id_map(self) -> list[tuple[Any, ...]]:
        # projection hashes are salted by each side's target path: keys and fields
        with StateStore.open(self.url) as store:
            rows = store.mapped("north", list(store.source_ids("north")))
        return sorted((sid, m.target_key, repr(m.fields)) for sid, m in rows.items())


def row(sid: str, *, city: str = "Leeds", region: str = "North", ok: str = "yes") -> str:
    return f"{sid},Name {sid},{city},+44 113 496 {sid[-4:]:0>4},{region},{ok}\n"


def people(n: int) -> list[str]:
    return [",".join(HEADER) + "\n"] + [row(f"P{i:04d}") for i in range(n)]


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the rows the CSV decoder decodes, in order."""
    calls: list[str] = []
    original = RowDecoder.decode

    def counting(self: RowDecoder, cells: list[str]) -> Record:
        calls.append(cells[self.key[0]] if self.key[0] < len(cells) else "")
        return original(self, cells)

    monkeypatch.setattr(RowDecoder, "decode", counting)
    return calls


def test_the_csv_adapter_declares_row_fingerprints() -> None:
    assert Capability.ROW_FINGERPRINTS in CsvAdapter.capabilities


def test_one_changed_row_decodes_one_row_and_converges(tmp_path: Path, decoded: list[str]) -> None:
    side = Side(tmp_path / "incremental")
    lines = people(40)
    side.write(lines)
    first = side.run()
    assert first.exit_code == 0
    assert first.full
    assert len(decoded) == 40
    decoded.clear()

    lines[7] = row("P0006", city="York")  # one row changed
    side.write(lines)
    again = side.run()
    assert again.exit_code == 0
    assert not again.full
    assert decoded == ["P0006"]
    assert again.counts.updated == 1

    fresh = Side(tmp_path / "fresh")
    fresh.write(lines)
    assert fresh.run().exit_code == 0
    assert side.target() == fresh.target()
    assert side.id_map() == fresh.id_map()


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, decoded: list[str]) -> None:
    side = Side(tmp_path)
    side.write(people(10))
    side.run()
    decoded.clear()
    result = side.run()
    assert decoded == []
    assert result.counts.read == 0


def test_fingerprints_are_loaded_only_when_the_file_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged file costs a hashing pass: the stored fingerprints (8 bytes a row, a set
    in memory) are not even loaded; a changed one loads those of the rows outside the
    blocks found unchanged (all of them at most once)."""
    loads: list[str] = []
    original = StateStore.fingerprints
    in_blocks = StateStore.block_fingerprints

    def counting(self: StateStore, job: str, cursor: str | None) -> frozenset[int] | None:
        loads.append(job)
        return original(self, job, cursor)

    def counting_blocks(self: StateStore, job: str, digests: Any) -> Any:
        loads.append(job)
        return in_blocks(self, job, digests)

    monkeypatch.setattr(StateStore, "fingerprints", counting)
    monkeypatch.setattr(StateStore, "block_fingerprints", counting_blocks)
    side = Side(tmp_path)
    lines = people(10)
    side.write(lines)
    side.run()
    assert side.run().counts.read == 0
    assert loads == []
    lines[2] = row("P0001", city="York")
    side.write(lines)
    changed = side.run()
    assert changed.counts.read == 1
    assert loads == ["north"]


def test_a_deleted_row_is_taken_back_though_the_others_are_skipped(
    tmp_path: Path, decoded: list[str]
) -> None:
    side = Side(tmp_path)
    lines = people(30)
    side.write(lines)
    side.run()
    decoded.clear()
    del lines[5]
    side.write(lines)
    result = side.run()
    assert decoded == []
    assert result.counts.deleted == 1
    assert result.counts.held == 0
    assert len(side.target()) == 29


def test_fingerprints_are_kept_with_the_cursor_as_one_blob(tmp_path: Path) -> None:
    side = Side(tmp_path)
    side.write(people(25))
    side.run()
    engine = sa.create_engine(side.url)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(row_fingerprints)))
        cursor = conn.scalar(sa.text("SELECT cursor FROM job_state WHERE job = 'north'"))
    engine.dispose()
    with engine.connect() as conn:
        blocks = list(conn.execute(sa.select(fingerprint_blocks)))
    engine.dispose()
    assert len(rows) == 1
    assert rows[0].cursor == cursor
    # the rows in no block in row_fingerprints, the others with their blocks
    assert len(rows[0].fingerprints) + sum(len(b.fingerprints) for b in blocks) == 8 * 25
    ids = sorted(sid for b in blocks for sid in split_ids(b.ids))
    assert len(ids) == len(set(ids)) == sum(len(b.fingerprints) for b in blocks) // 8


def test_unchanged_blocks_are_seen_whole_and_a_deleted_row_taken_back(
    tmp_path: Path, decoded: list[str], block_size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1-row change decodes that row; the other rows' blocks are listed unchanged (not
    split), count as seen, and a row deleted with its block is taken back, as a full run
    would: the same target and id map."""
    unchanged: list[int] = []
    keep = BlockKeeper.keep

    def counting(self: BlockKeeper, page: Page, *args: Any) -> int:
        unchanged.append(len(page.unchanged))
        return keep(self, page, *args)

    monkeypatch.setattr(BlockKeeper, "keep", counting)
    side = Side(tmp_path / "incremental")
    lines = people(60)
    side.write(lines)
    side.run()
    decoded.clear()
    unchanged.clear()
    lines[30] = row("P0029", city="York")  # one row changed
    del lines[50]  # one row deleted
    side.write(lines)
    again = side.run()
    assert decoded == ["P0029"]
    assert again.counts.updated == 1
    assert again.counts.deleted == 1
    assert again.counts.held == 0
    if block_size == "small blocks":
        assert sum(unchanged) > 5
    fresh = Side(tmp_path / "fresh")
    fresh.write(lines)
    fresh.run()
    assert side.target() == fresh.target()
    assert side.id_map() == fresh.id_map()


@pytest.mark.parametrize("reason", ["reconcile", "policy", "mapping"])
def test_a_run_that_changes_decisions_decodes_every_row(
    tmp_path: Path, decoded: list[str], reason: str
) -> None:
    side = Side(tmp_path)
    lines = people(12)
    side.write(lines)
    side.run()
    decoded.clear()
    lines[1] = row("P0000", city="Hull")
    side.write(lines)
    options: dict[str, Any] = {}
    if reason == "reconcile":
        options["reconcile"] = True
    elif reason == "policy":
        (side.root / "north.yaml").write_text(POLICY.replace("last4", "absent"), "utf-8")
    else:
        config = CONFIG.replace("local_ok}", "local_ok, extra.csv.team: region}")
        (side.root / "connector.yaml").write_text(config, encoding="utf-8")
    result = side.run(**options)
    assert result.full
    assert len(decoded) == 12


def test_outstanding_changes_are_decoded_again_and_only_they(
    tmp_path: Path, decoded: list[str]
) -> None:
    side = Side(tmp_path)
    lines = people(20)
    side.write(lines)
    side.run()
    original = CsvWrites._apply

    def refuse(self: CsvWrites, change: Any) -> Any:
        if change.record is not None and change.record.get("city") == "York":
            from connector_core.adapters import WriteResult

            return WriteResult(change.key, "failed", error="refused by the test")
        return original(self, change)

    lines[3] = row("P0002", city="York")
    side.write(lines)
    CsvWrites._apply = refuse  # type: ignore[method-assign]
    try:
        failed = side.run()
    finally:
        CsvWrites._apply = original  # type: ignore[method-assign]
    assert failed.counts.failed == 1
    decoded.clear()
    retried = side.run()  # the file is unchanged: the failed change alone is decoded again
    assert decoded == ["P0002"]
    assert retried.exit_code == 0
    assert retried.counts.updated == 1
    assert not retried.full  # the outstanding change did not cost a full read

    fresh = Side(tmp_path / "fresh")
    fresh.write(lines)
    fresh.run()
    assert side.target() == fresh.target()


def test_a_row_repeating_a_known_key_merges_every_row_of_it(
    tmp_path: Path, decoded: list[str]
) -> None:
    side = Side(tmp_path)
    lines = people(10)
    side.write(lines)
    side.run()
    decoded.clear()
    lines.append(row("P0004", ok="no"))  # the same person again, refusing
    side.write(lines)
    result = side.run()
    assert sorted(decoded) == ["P0004", "P0004"]
    assert result.counts.deleted == 1  # a refusal among the evidence takes the share back
    fresh = Side(tmp_path / "fresh")
    fresh.write(lines)
    fresh.run()
    assert side.target() == fresh.target()


# -- random edits, crashes --------------------------------------------------------------

EDITS = ("change", "insert", "delete", "duplicate", "corrupt", "move", "quote", "blank")


def _edit(lines: list[str], edit: str, draw: st.DataObject, serial: list[int]) -> None:
    body = range(1, len(lines))
    if edit == "insert" or len(lines) < 3:
        serial[0] += 1
        lines.insert(draw.draw(st.integers(1, len(lines))), row(f"N{serial[0]:04d}"))
        return
    at = draw.draw(st.sampled_from(body))
    sid = lines[at].split(",", 1)[0].strip('"')
    if edit == "change":
        lines[at] = row(sid, city=draw.draw(st.sampled_from(("York", "Hull", "Leeds"))))
    elif edit == "move":
        lines[at] = row(sid, region="South", ok=draw.draw(st.sampled_from(("yes", "no", ""))))
    elif edit == "delete":
        del lines[at]
    elif edit == "duplicate":
        lines.insert(draw.draw(st.integers(1, len(lines))), lines[at])
    elif edit == "corrupt":
        lines[at] = f"{sid},only two cells\n"
    elif edit == "quote":
        lines[at] = f'"{sid}","Name\n{sid}",Leeds,"+44 113 496 0001",North,yes\n'
    else:
        lines.insert(at, ",,,,,\n")


def _converges(tmp: Path, steps: list[tuple[list[str], int | None]], lines: list[str]) -> None:
    """The incremental side (maybe killed, then run again) against a reference side that
    sees the same files and reads every row every time (a forced full run)."""
    side = Side(tmp / "incremental")
    reference = Side(tmp / "reference")
    for each in (side, reference):
        each.write(lines)
        assert each.run().aborted is None
    for edited, kill_at in steps:
        side.write(edited)
        reference.write(edited)
        if kill_at is not None:
            switch = crash.KillSwitch(kill_at)
            crash.killed_in_fork(
                lambda switch=switch: crash.run_with_switch(side.load(), side.url, switch)
            )
        result = side.run()
        assert result.aborted is None, result.aborted
        full = reference.run(reconcile=True, accept_deletes=1000)
        assert full.aborted is None
        assert full.full
        if result.counts.held or result.counts.outstanding:  # the guard held deletes back
            assert side.run(accept_deletes=1000).exit_code in (0, 1)
        assert side.target() == reference.target()
        assert side.id_map() == reference.id_map()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    draw=st.data(),
    n=st.integers(2, 12),
    rounds=st.lists(
        st.tuples(
            st.lists(st.sampled_from(EDITS), min_size=1, max_size=4),
            st.one_of(st.none(), st.integers(1, 8)),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_random_edits_converge_to_a_full_run(
    draw: st.DataObject, n: int, rounds: list[tuple[list[str], int | None]]
) -> None:
    lines = people(n)
    serial = [0]
    steps = []
    edited = list(lines)
    for edits, kill_at in rounds:
        edited = list(edited)
        for edit in edits:
            _edit(edited, edit, draw, serial)
        steps.append((edited, kill_at))
    tmp = Path(tempfile.mkdtemp(prefix="fingerprints-"))
    try:
        _converges(tmp, steps, lines)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the adapter alone --------------------------------------------------------------------

CELLS = st.sampled_from(
    ["P1", "P2", "P3", "", " ", "a,b", 'say "hi"', "x\ny", "é", "=1+1", "a\\b", "x;y", "\xa0"]
)


def _pages(adapter: CsvAdapter, **kwargs: Any) -> Iterator[Any]:
    for page in adapter.read(**kwargs):
        yield [dict(r) for r in page.records], [str(p) for p in page.problems], page.skipped


OPTIONS = st.sampled_from(
    [{}, {"delimiter": ";"}, {"quoting": "none"}, {"encoding": "latin-1"}, {"encoding": "utf-16"}]
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(CELLS, min_size=0, max_size=4), max_size=8),
    crlf=st.booleans(),
    options=OPTIONS,
)
def test_fingerprinted_reads_list_what_plain_reads_list(
    rows: list[list[str]], crlf: bool, options: dict[str, str]
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fingerprint-read-"))
    try:
        path = tmp / "people.csv"
        encoding = options.get("encoding", "utf-8")
        with path.open("w", encoding=encoding, newline="") as out:
            csv.writer(
                out,
                delimiter=options.get("delimiter", ","),
                lineterminator="\r\n" if crlf else "\n",
            ).writerows([["id", "first_name", "city"], *rows])
        from connector_csv import CsvSettings

        from connector_core.adapters import KnownRows

        settings = CsvSettings(path=path, page_size=2, **options)  # type: ignore[arg-type]
        adapter = CsvAdapter(settings, connection="people")
        import connector_csv.adapter as csv_adapter

        splittable = csv_adapter.splittable
        csv_adapter.splittable = lambda encoding: False  # type: ignore[assignment]
        try:  # the csv module's parse of the whole file, as the reference
            plain = [(r, p) for page in _pages(adapter) for r, p, _ in [page]]
        finally:
            csv_adapter.splittable = splittable
        pages = list(adapter.read(known=KnownRows()))
        listed = [([dict(r) for r in p.records], [str(q) for q in p.problems]) for p in pages]
        flat = lambda xs, i: [x for page in xs for x in page[i]]  # noqa: E731
        assert flat(listed, 0) == flat(plain, 0)
        assert flat(listed, 1) == flat(plain, 1)
        assert pages[-1].cursor is not None
        # known: the same rows, skipped by id; nothing decoded again
        marks = {m for p in pages for m in p.fingerprints.values()}
        again = list(adapter.read(known=KnownRows(frozenset(marks))))
        skipped = [sid for p in again for sid in p.skipped]
        assert sorted(skipped) == sorted({sid for p in pages for sid in p.fingerprints})
        assert [r["id"] for p in again for r in p.records] == [
            r["id"] for r in flat(listed, 0) if r["id"] not in skipped
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_dataclass_page_defaults_are_empty() -> None:
    from connector_core.adapters import Page

    page = Page([])
    assert dataclasses.asdict(page)["skipped"] == []
    assert page.fingerprints == {}


def test_store_keeps_fingerprints_only_with_their_cursor(store: StateStore) -> None:
    """On SQLite and PostgreSQL: one blob per job, read back only for its own cursor."""
    big = [2**64 - 1, 0, 2**63, 12345]
    store.record_batch("j", "t", "p", "h", [], cursor="c1", fingerprints=big)
    assert store.fingerprints("j", "c1") == set(big)
    assert store.fingerprints("j", "c0") is None
    assert store.fingerprints("other", "c1") is None
    store.record_batch("j", "t", "p", "h", [], cursor="c2")  # a cursor without them
    assert store.fingerprints("j", "c1") is None
    assert store.fingerprints("j", "c2") is None
    store.record_batch("j", "t", "p", "h", [], fingerprints=[9])  # KEEP: nothing moves
    assert store.fingerprints("j", "c2") is None


def test_store_keeps_blocks_with_their_cursor(store: StateStore) -> None:
    """On SQLite and PostgreSQL: blocks found unchanged stay (with their parts), gone ones
    go, new ones come; a cursor saved without fingerprints forgets them all."""
    first = SavedBlocks()
    first.add(b"A" * 16, ["a1", "a2"], [1, 2], b"a" * 16 + b"\0" * 16)
    first.add(b"B" * 16, ["b1"], [3])
    store.record_batch("j", "t", "p", "h", [], cursor="c1", fingerprints=[7], blocks=first)
    assert store.block_digests("j") == {b"A" * 16, b"B" * 16}
    assert split_ids(store.block_ids("j", [b"A" * 16])[b"A" * 16]) == ["a1", "a2"]
    assert store.fingerprints("j", "c1") == {1, 2, 3, 7}
    assert set(store.block_fingerprints("j", [b"B" * 16])) == {3, 7}
    assert store.block_parts("j") == {b"A" * 16: b"a" * 16 + b"\0" * 16}  # B has none
    ids, marks = store.block_rows("j", [b"A" * 16, b"Z" * 16])[b"A" * 16]
    assert (ids, list(marks)) == (["a1", "a2"], [1, 2])
    second = SavedBlocks()
    second.kept.append(b"A" * 16)
    second.add(b"C" * 16, ["c1"], [4], b"c" * 16)
    store.record_batch("j", "t", "p", "h", [], cursor="c2", fingerprints=[], blocks=second)
    assert store.block_digests("j") == {b"A" * 16, b"C" * 16}
    assert store.fingerprints("j", "c2") == {1, 2, 4}
    assert store.block_parts("j") == {b"A" * 16: b"a" * 16 + b"\0" * 16, b"C" * 16: b"c" * 16}
    assert store.block_parts("j", [b"C" * 16, b"B" * 16]) == {b"C" * 16: b"c" * 16}
    store.record_batch("j", "t", "p", "h", [], cursor="c3")  # a cursor without them
    assert store.block_digests("j") == set()
    assert store.fingerprints("j", "c3") is None


def test_a_store_at_0010_migrates_keeping_its_row_fingerprints(state_url: str) -> None:
    """A store the previous version left keeps its row fingerprints (the next changed read
    skips rows one by one and saves blocks for the reads after it)."""
    import alembic.command

    from connector_core.sync.migrations import alembic_config

    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0010_approval_sets")
        conn.execute(
            sa.insert(row_fingerprints).values(
                job="j", cursor="c1", fingerprints=(5).to_bytes(8, "little")
            )
        )
        assert not sa.inspect(conn).has_table("fingerprint_blocks")
    engine.dispose()
    with StateStore.open(state_url) as upgraded:
        assert upgraded.fingerprints("j", "c1") == {5}
        assert upgraded.block_digests("j") == set()


def test_a_block_holding_a_rejected_row_is_kept_as_its_other_rows_fingerprints() -> None:
    """A row the policy could not decide is decoded again next time: a block holding it is
    not kept whole, but as its other rows' fingerprints, as is a block found twice (or with
    an id holding a newline); the blocks found unchanged are kept (their stored rows)."""
    keeper = BlockKeeper()
    page = Page([], snapshot=True, unchanged=[b"C" * 16])
    page.blocks = [
        Block(b"A" * 16, ["a1", "a2"], [1, 2]),
        Block(b"B" * 16, ["b1"], [3]),
        Block(b"B" * 16, ["b1"], [3]),
        Block(b"D" * 16, ["d\n1"], [4]),
    ]
    keeper.keep(page, ["a2"], None)
    assert [new[0] for new in keeper.saved.new] == [b"B" * 16]
    assert keeper.saved.kept == [b"C" * 16]
    assert sorted(keeper.loose) == [1, 3, 4]


def test_a_block_holding_an_id_to_decode_is_not_skipped(store: StateStore) -> None:
    """Blocks holding an outstanding change or a row held for approval (KnownRows.decode)
    are not offered as unchanged: they are split, so that row is decoded again; the rows of
    every block not found unchanged may be skipped one by one."""
    saved = SavedBlocks()
    saved.add(b"A" * 16, ["a1", "a2"], [1, 2])
    saved.add(b"B" * 16, ["b1"], [3])
    store.record_batch("j", "t", "p", "h", [], cursor="c1", fingerprints=[7], blocks=saved)
    everything = StoredBlocks(store, "j", frozenset())
    assert b"A" * 16 in everything
    assert b"B" * 16 in everything
    held = StoredBlocks(store, "j", frozenset({"a2"}))
    assert b"A" * 16 not in held
    assert b"B" * 16 in held
    assert list(held.ids([b"B" * 16])) == ["b1"]
    assert set(held.rows([b"B" * 16])) == {1, 2, 7}


def test_a_shared_reads_blocks_are_kept_under_its_new_name_by_every_task(
    store: StateStore,
) -> None:
    """A shared read's fingerprints are kept per cursor (connector_core.sync.fanout): the
    blocks it found unchanged are copied from the name it started from, its new ones added;
    a second task keeping the same read under the same name changes nothing."""
    old = SavedBlocks()
    old.add(b"A" * 16, ["a1", "a2"], [1, 2], b"p" * 16)
    old.add(b"B" * 16, ["b1"], [3])
    store.keep_shared("shared c1", "c1", [9], old)
    new = SavedBlocks()
    new.kept.append(b"A" * 16)  # unchanged; B changed into C
    new.add(b"C" * 16, ["b1", "c1"], [4, 5], b"q" * 16 + b"r" * 16)
    for _task in range(2):
        store.keep_shared("shared c2", "c2", [10], new, start="shared c1")
        assert store.block_digests("shared c2") == {b"A" * 16, b"C" * 16}
        parts = {b"A" * 16: b"p" * 16, b"C" * 16: b"q" * 16 + b"r" * 16}
        assert store.block_parts("shared c2") == parts
        assert store.fingerprints("shared c2", "c2") == {1, 2, 4, 5, 10}
    assert store.fingerprints("shared c1", "c1") == {1, 2, 3, 9}  # the start's stay


def test_a_shared_reads_blocks_replace_those_kept_under_its_name(store: StateStore) -> None:
    """The last read kept under a name decides what is kept there, as for its fingerprints:
    a block another task kept whole (its jobs decided every row) goes when this task's
    jobs rejected one of its records (kept as the other rows' fingerprints: the rejected
    one is decoded again next time), and a block of an earlier read at the same cursor (a
    file back to earlier bytes) goes when this read did not keep it."""
    whole = SavedBlocks()
    whole.add(b"X" * 16, ["w", "x", "y"], [11, 12, 13])
    whole.add(b"S" * 16, ["s"], [14])
    store.keep_shared("shared c2", "c2", [], whole)
    rejected_x = SavedBlocks()  # x rejected: its block kept as w's and y's fingerprints
    store.keep_shared("shared c2", "c2", [11, 13], rejected_x)
    assert store.fingerprints("shared c2", "c2") == {11, 13}
    assert store.block_digests("shared c2") == set()


def test_blocks_kept_under_a_name_without_fingerprints_are_pruned(
    store: StateStore, raw_engine: sa.Engine
) -> None:
    """Blocks a task committed under a name that another task forgot meanwhile (its
    fingerprints row gone, their inserts not yet visible to it) go at the next prune."""
    saved = SavedBlocks()
    saved.add(b"A" * 16, ["a1"], [1])
    store.keep_shared("shared c1", "c1", [], saved)
    store.keep_shared("shared c2", "c2", [], saved)
    with raw_engine.begin() as conn:  # as if pruned under the task's feet
        conn.execute(sa.delete(row_fingerprints).where(row_fingerprints.c.job == "shared c1"))
    store.prune_fingerprints("shared", len("shared c1"), keep=["c2"])
    assert store.block_digests("shared c1") == set()
    assert store.block_digests("shared c2") == {b"A" * 16}


def test_blocks_gone_from_the_store_while_a_read_lists_them_stop_it(store: StateStore) -> None:
    """A read lists the rows of the blocks it found unchanged by their kept ids; a block the
    store lost meanwhile (another task forgetting a shared read's old cursor) is an error,
    never fewer ids (a row not listed counts as gone from the source: taken back)."""
    saved = SavedBlocks()
    saved.add(b"A" * 16, ["a1", "a2"], [1, 2])
    saved.add(b"B" * 16, ["b1"], [3])
    store.keep_shared("shared c1", "c1", [], saved)
    blocks = StoredBlocks(store, "shared c1", frozenset())
    assert b"A" * 16 in blocks  # held as the read starts
    assert blocks.ids([b"A" * 16]) == ["a1", "a2"]
    store.prune_fingerprints("shared", len("shared c1"), keep=["c2"])
    assert b"B" * 16 in blocks
    with pytest.raises(StateStoreError, match="changed while the source was read"):
        blocks.ids([b"B" * 16])
    with pytest.raises(StateStoreError, match="changed while the source was read"):
        blocks.block_rows([b"A" * 16])


def test_the_parts_offered_are_those_of_held_blocks_found_once(store: StateStore) -> None:
    """A part names one run of rows: not one of a block holding an id to decode, nor one
    that two blocks (or one block twice) hold."""
    saved = SavedBlocks()
    saved.add(b"A" * 16, ["a1", "a2", "a3"], [1, 2, 3], b"p" * 16 + b"q" * 16)
    saved.add(b"B" * 16, ["b1", "b2"], [4, 5], b"q" * 16 + b"r" * 16)
    saved.add(b"C" * 16, ["c1", "c2"], [6, 7], b"s" * 16 + b"t" * 16)
    saved.add(b"D" * 16, ["d1", "d2"], [8, 9], b"u" * 16 + b"u" * 16)
    store.record_batch("j", "t", "p", "h", [], cursor="c1", fingerprints=[], blocks=saved)
    held = StoredBlocks(store, "j", frozenset({"c2"}))
    assert held.parts() == {b"p" * 16: (b"A" * 16, 0), b"r" * 16: (b"B" * 16, 1)}
    # but the blocks found unchanged: B's part "q" is A's alone then
    assert held.parts([b"B" * 16]) == {b"p" * 16: (b"A" * 16, 0), b"q" * 16: (b"A" * 16, 1)}
    ids, marks = held.block_rows([b"B" * 16])[b"B" * 16]
    assert (ids, list(marks)) == (["b1", "b2"], [4, 5])


def test_a_store_at_0018_migrates_keeping_its_blocks_without_parts(state_url: str) -> None:
    """Blocks saved before parts were kept stay, with none: a block of theirs that changes
    is split row by row, and the blocks saved after it have parts."""
    import alembic.command

    from connector_core.sync.migrations import alembic_config

    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0018_lean_state_v3")
        insert = "INSERT INTO fingerprint_blocks VALUES (:job, :digest, :ids, :marks)"
        five = (5).to_bytes(8, "little")
        conn.execute(
            sa.text(insert), {"job": "j", "digest": b"A" * 16, "ids": b"a1", "marks": five}
        )
    engine.dispose()
    with StateStore.open(state_url) as upgraded:
        assert upgraded.block_digests("j") == {b"A" * 16}
        assert upgraded.block_parts("j") == {}
        assert StoredBlocks(upgraded, "j", frozenset()).parts() == {}
