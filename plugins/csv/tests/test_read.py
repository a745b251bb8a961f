"""Reading: encodings, malformed rows with their lines, paging, cursors and the mapping."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
from connector_csv import CsvAdapter

from connector_core.adapters import ReadProblem
from connector_core.consent import state as consent_state
from connector_core.errors import AdapterError
from connector_core.records import Expected, Record

MakeAdapter = Callable[..., CsvAdapter]
ReadAll = Callable[..., tuple[list[Record], list[ReadProblem]]]


def write_bytes(path: Path, data: bytes) -> str:
    """Write `data` and return the cursor a read of it must give."""
    path.write_bytes(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def lines(path: Path, *rows: str) -> str:
    return write_bytes(path, "".join(row + "\r\n" for row in rows).encode())


# -- encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_a_utf8_bom_is_removed(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll, encoding: str
) -> None:
    csv_path.write_bytes(b"\xef\xbb\xbfid,first_name\r\n1,Zo\xc3\xab\r\n")
    records, problems = read_all(make_adapter(encoding=encoding))
    assert records == [{"id": "1", "first_name": "Zoë"}]
    assert problems == []


def test_latin1_setting(csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll) -> None:
    csv_path.write_bytes("id,first_name,city\n1,Zoë,Kraków\n".encode("latin-1"))
    records, problems = read_all(make_adapter(encoding="latin-1"))
    assert records == [{"id": "1", "first_name": "Zoë", "city": "Kraków"}]
    assert problems == []


def test_undecodable_bytes_are_reported_with_their_line(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    csv_path.write_bytes(b'id,city\n1,Berlin\n2,"Cork\nnorth"\n3,K\xf6ln\n4,Lagos\n')
    records, problems = read_all(make_adapter())
    assert [r["id"] for r in records] == ["1", "2", "4"]
    assert [str(p) for p in problems] == [
        f"{csv_path}:5: expected text in the file's encoding "
        "(see encoding: in the connection's settings)"
    ]


def test_latin1_file_read_as_utf8_names_the_encoding_fix(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    csv_path.write_bytes("id,Straße\n1,x\n".encode("latin-1"))
    with pytest.raises(AdapterError, match=r"people\.csv:1: the header has invalid utf-8") as info:
        list(make_adapter().read())
    assert info.value.hint is not None
    assert "encoding:" in info.value.hint


# -- malformed rows ---------------------------------------------------------------------------


def test_ragged_rows_report_the_line_they_start_on(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    lines(
        csv_path,
        "id,first_name,street_address",  # 1
        '1,Ada,"12 Rue de la Paix',  # 2: a quoted cell over three lines
        "Bâtiment B",  # 3
        'cour"',  # 4
        "2,Grace",  # 5: too few
        "",  # 6: blank lines are skipped silently
        "3,Alan,Main St,extra",  # 7: too many
        "4,Edsger,Side St",  # 8
    )
    records, problems = read_all(make_adapter())
    assert [r["id"] for r in records] == ["1", "4"]
    assert records[0]["street_address"] == "12 Rue de la Paix\r\nBâtiment B\r\ncour"
    assert [(p.location, p.expected) for p in problems] == [
        (f"{csv_path}:5", Expected.ROW),
        (f"{csv_path}:7", Expected.ROW),
    ]
    assert str(problems[0]) == f"{csv_path}:5: expected as many cells as the header has"


def test_malformed_quoting_is_reported(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    lines(csv_path, "id,first_name", '1,"Ada"x', "2,Grace", '3,"never closed', "4,Alan")
    records, problems = read_all(make_adapter())
    assert [r["id"] for r in records] == ["2"]
    assert [p.location for p in problems] == [f"{csv_path}:2", f"{csv_path}:4"]
    assert all(p.expected is Expected.CSV_ROW for p in problems)


def test_invalid_values_name_the_column_and_the_expected_form(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    lines(
        csv_path,
        "id,email,birth_date,do_not_email,latitude",
        "1,ada@example.org,31/12/1990,no,52.5",
        "2,grace@example.org,1990-12-31,maybe,52.5",
        "3,alan@example.org,1990-12-31,no,north",
        f"4,edsger@example.org,{'9' * 60},no,1",
    )
    records, problems = read_all(make_adapter())
    assert records == []
    messages = [str(p) for p in problems]
    assert messages == [
        f"{csv_path}:2: record '1', field 'birth_date': expected a date (YYYY-MM-DD)",
        f"{csv_path}:3: record '2', field 'do_not_email': "
        "expected a yes/no value (yes/no, true/false or 1/0)",
        f"{csv_path}:4: record '3', field 'latitude': expected a number (like 52.52)",
        f"{csv_path}:5: record '4', field 'birth_date': expected a date (YYYY-MM-DD)",
    ]
    for value in ("example.org", "31/12/1990", "maybe", "north", "999"):  # no cell, ever
        assert not any(value in message for message in messages)


def test_missing_and_duplicate_keys(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    lines(csv_path, "id,first_name", "1,Ada", " ,Nobody", "2,Grace", "1,Impostor")
    records, problems = read_all(make_adapter())
    assert records == [{"id": "2", "first_name": "Grace"}]  # rows of id 1 disagree: held
    assert [(str(p), p.key, p.consent) for p in problems] == [
        (f"{csv_path}:3: field 'id': expected a key (the cell is empty)", None, None),
        (
            f"{csv_path}:2,5: record '1', field 'id': expected {Expected.HELD_ROWS.value}",
            "1",
            {},
        ),
    ]


def test_duplicate_keys_merge_consent_yes_only_where_every_row_says_yes(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    lines(
        csv_path,
        "id,first_name,Newsletter,Local",
        "1,Ada,yes,yes",
        "2,Grace,yes,",
        "1,Ada,no,yes",
        "2,Grace,yes,yes",
        "3,Alan,yes,",
        "3,Turing,no,",
    )
    mapping = {"consent.contact_me": "Newsletter", "consent.local": "Local"}
    records, problems = read_all(make_adapter(mapping=mapping))
    by_id = {r["id"]: r for r in records}
    assert {p: s["granted"] for p, s in by_id["1"]["consent"].items()} == {
        "contact_me": False,
        "local": True,
    }
    assert {p: s["granted"] for p, s in by_id["2"]["consent"].items()} == {"contact_me": True}
    # rows of 3 disagree on the name: held, with what they say together about consent
    assert "3" not in by_id
    assert [(p.key, p.expected) for p in problems] == [
        ("1", Expected.MERGED_ROWS),
        ("2", Expected.MERGED_ROWS),
        ("3", Expected.HELD_ROWS),
    ]
    assert problems[2].consent == {"contact_me": consent_state(False, "csv:people")}
    assert not any("Ada" in str(p) or "Turing" in str(p) for p in problems)


def test_strict_mode_stops_at_the_first_problem(csv_path: Path, make_adapter: MakeAdapter) -> None:
    lines(csv_path, "id,birth_date", "1,1990-01-01", "2,yesterday", "3,also bad")
    with pytest.raises(AdapterError) as info:
        list(make_adapter(strict=True).read())
    assert str(info.value) == (
        f"{csv_path}:3: record '2', field 'birth_date': expected a date (YYYY-MM-DD)"
    )
    assert info.value.hint == "Fix the row, or set strict: false to skip bad rows."


# -- file-level problems ---------------------------------------------------------------------


def test_a_missing_file_is_an_error_with_a_hint(make_adapter: MakeAdapter) -> None:
    pages = make_adapter().read()
    assert inspect.isgenerator(pages)  # nothing happens until the first page is asked for
    with pytest.raises(AdapterError, match=r"people\.csv does not exist") as info:
        next(pages)
    assert info.value.hint is not None
    assert "path:" in info.value.hint


@pytest.mark.parametrize("content", [b"", b"\r\n  \r\n", b"id,first_name\r\n"])
def test_an_empty_file_reads_as_one_empty_snapshot(
    csv_path: Path, make_adapter: MakeAdapter, content: bytes
) -> None:
    cursor = write_bytes(csv_path, content)
    [page] = make_adapter().read()
    assert (page.records, page.problems, page.cursor, page.snapshot) == ([], [], cursor, True)


def test_repeated_header_names_are_an_error(csv_path: Path, make_adapter: MakeAdapter) -> None:
    lines(csv_path, "id,email,city,email,city,", "1,a,b,c,d,")
    with pytest.raises(AdapterError, match=r"repeats column names \(columns 2 and 4, 3 and 5\)"):
        list(make_adapter().read())


@pytest.mark.parametrize(
    "first",
    [
        "M0001,Kofi,Evans,kofi.evans@example.org,+44 113 496 8779,25 Station Road",
        "M0002,yes,no,yes,no,Leeds",  # repeated cells look like repeated column names
    ],
)
def test_a_file_without_a_header_never_shows_its_first_row(
    csv_path: Path, make_adapter: MakeAdapter, first: str
) -> None:
    """A source whose header line is missing starts with a person: the errors say what is
    wrong by column position, never with the cells (they may be data)."""
    lines(csv_path, first, "M0003,Ana,Lima,ana@example.org,+44 113 496 0000,1 Mill Lane")
    with pytest.raises(AdapterError) as info:
        list(make_adapter().read())
    shown = f"{info.value} {info.value.hint}"
    for cell in first.split(","):
        assert cell not in shown, cell


def test_a_missing_key_column_suggests_the_delimiter(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    lines(csv_path, "id;email", "1;a@example.org")
    with pytest.raises(AdapterError, match="has no 'id' column") as info:
        list(make_adapter().read())
    assert info.value.hint is not None
    assert "separated by ';'" in info.value.hint


# -- dialects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("delimiter", "char"), [(";", ";"), ("tab", "\t")])
def test_other_delimiters(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll, delimiter: str, char: str
) -> None:
    lines(csv_path, char.join(["id", "city", "groups"]), char.join(["1", "Köln, Nord", "a|b"]))
    records, problems = read_all(make_adapter(delimiter=delimiter))
    assert records == [{"id": "1", "city": "Köln, Nord", "groups": ["a", "b"]}]
    assert problems == []


# -- paging and cursors -----------------------------------------------------------------------


def test_reads_are_lazy_pages_of_page_size(csv_path: Path, make_adapter: MakeAdapter) -> None:
    cursor = lines(csv_path, "id,email", *(f"{i},p{i}@example.org" for i in range(2500)))
    pages = make_adapter(page_size=1000).read()
    assert inspect.isgenerator(pages)
    first = next(pages)
    assert (len(first.records), first.cursor, first.snapshot) == (1000, None, True)
    rest = list(pages)
    assert [len(p.records) for p in rest] == [1000, 500]
    assert [p.cursor for p in rest] == [None, cursor]
    assert all(p.snapshot for p in rest)


def test_a_full_last_page_carries_the_cursor(csv_path: Path, make_adapter: MakeAdapter) -> None:
    cursor = lines(csv_path, "id", *(str(i) for i in range(20)))
    pages = list(make_adapter(page_size=10).read())
    assert [(len(p.records), p.cursor) for p in pages] == [(10, None), (10, cursor)]


def test_unchanged_file_gives_one_empty_page_without_parsing(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    # A malformed row that is never reported proves the file was only hashed.
    cursor = lines(csv_path, "id,email", "1,a@example.org", "2,x,y,z")
    pages = list(make_adapter(strict=True).read(cursor=cursor))
    assert [(p.records, p.problems, p.cursor, p.snapshot) for p in pages] == [
        ([], [], cursor, False)
    ]


def test_changed_file_is_read_again_as_a_snapshot(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter()
    old = lines(csv_path, "id,email", "1,a@example.org")
    [page] = adapter.read()
    assert page.cursor == old
    new = lines(csv_path, "id,email", "1,a@example.org", "2,b@example.org")
    [page] = adapter.read(cursor=old)
    assert ([r["id"] for r in page.records], page.cursor, page.snapshot) == (["1", "2"], new, True)


# -- mapping ------------------------------------------------------------------------------------

MAPPING: dict[str, str | None] = {
    "email": "E-Mail",
    "first_name": "Vorname",
    "consent.contact_me": "Newsletter",
    "consent.share_with_partners": "Partners",
    "extra.csv.shirt_size": "Shirt size",
    "phone": None,
}


def test_mapping_renames_consent_extras_and_lists(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    lines(
        csv_path,
        "id,Vorname,E-Mail,phone,tags,do_not_phone,latitude,Newsletter,Partners,Shirt size,notes",
        "1,Ada,ada@example.org,+1 555,b; a|c,yes,52.5,yes,,M,private",
        "2,Grace,,,,,,no,0,,",
    )
    records, problems = read_all(make_adapter(mapping=MAPPING))
    assert problems == []
    source = "csv:people"
    assert records == [
        {
            "id": "1",
            "first_name": "Ada",
            "email": "ada@example.org",
            "tags": ["a", "b", "c"],
            "do_not_phone": True,
            "latitude": 52.5,
            "consent": {"contact_me": {"granted": True, "source": source, "at": None}},
            "extra.csv.shirt_size": "M",
        },
        {
            "id": "2",
            "first_name": "Grace",
            "email": None,
            "tags": None,
            "do_not_phone": None,
            "latitude": None,
            "consent": {
                "contact_me": {"granted": False, "source": source, "at": None},
                "share_with_partners": {"granted": False, "source": source, "at": None},
            },
            "extra.csv.shirt_size": None,
        },
    ]


def test_invalid_consent_cell_is_a_problem(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    lines(csv_path, "id,Newsletter", "1,perhaps")
    _, [problem] = read_all(make_adapter(mapping=MAPPING))
    assert (problem.key, problem.field, problem.expected) == ("1", "Newsletter", Expected.CONSENT)
    assert "perhaps" not in str(problem)


def test_fields_limit_what_is_read(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    lines(csv_path, "id,email,birth_date,Newsletter", "1,a@example.org,not a date,yes")
    adapter = make_adapter(mapping=MAPPING | {"email": "email"})
    records, problems = read_all(adapter, fields=frozenset({"email"}))
    assert (records, problems) == ([{"id": "1", "email": "a@example.org"}], [])
    records, _ = read_all(adapter, fields=frozenset({"consent"}))
    assert records == [
        {
            "id": "1",
            "consent": {"contact_me": {"granted": True, "source": "csv:people", "at": None}},
        }
    ]


def test_another_key_column(csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll) -> None:
    lines(csv_path, "member_no,id,email", "M-1,7,a@example.org")
    records, _ = read_all(make_adapter(key_column="member_no"))
    assert records == [{"id": "M-1", "email": "a@example.org"}]


# -- check and schema ----------------------------------------------------------------------------


def test_schema_lists_the_mapped_header_columns(csv_path: Path, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(mapping=MAPPING)
    assert {"consent.contact_me", "extra.csv.shirt_size", "email", "city"} <= adapter.schema()
    assert "phone" not in adapter.schema()
    lines(csv_path, "id,E-Mail,Newsletter,unmapped")
    assert adapter.schema() == {"id", "email", "consent.contact_me"}


def test_check(csv_path: Path, tmp_path: Path, make_adapter: MakeAdapter) -> None:
    make_adapter().check()  # not there yet, but its folder is writable
    lines(csv_path, "id,email")
    make_adapter().check()
    lines(csv_path, "id,email,email")
    with pytest.raises(AdapterError, match="repeats"):
        make_adapter().check()
    with pytest.raises(AdapterError, match="nor does its folder") as info:
        make_adapter(path=tmp_path / "missing" / "people.csv").check()
    assert info.value.hint


# -- keys made equal by the formula guard -----------------------------------------------------


@pytest.mark.parametrize("neutralize", [True, False])
def test_key_cells_the_guard_makes_equal_are_one_key_read_twice(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll, neutralize: bool
) -> None:
    """A full read keeps the first line of only the ids that undoing the guard can make
    equal (``'=x`` and ``=x``); those still repeat, and say where the key was first seen."""
    lines(csv_path, "id,first_name", "'=x,Ana", "a1,Bo", "=x,Cy", "' =y,Di", " =y,Ed", "1,Fe")
    records, problems = read_all(make_adapter(neutralize_formulas=neutralize))
    if not neutralize:  # every key cell is its own id
        assert [r["id"] for r in records] == ["'=x", "a1", "=x", "' =y", " =y", "1"]
        assert problems == []
        return
    assert [r["id"] for r in records] == ["=x", "a1", " =y", "1"]
    assert [(p.location, p.expected, p.key, p.first_at) for p in problems] == [
        (f"{csv_path}:4", Expected.UNIQUE_KEY, "=x", "line 2"),
        (f"{csv_path}:6", Expected.UNIQUE_KEY, " =y", "line 5"),
    ]


def test_a_row_held_for_a_bad_cell_still_says_its_explicit_no(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    """A row with a bad cell is held (a problem with its key), but a consent cell that says
    no is evidence on its own: the problem carries it, so the withdrawal goes through."""
    mapping = {"consent.contact_me": "Newsletter", "consent.local": "Local"}
    lines(
        csv_path,
        "id,Newsletter,Local,do_not_phone",
        "1,no,yes,maybe",  # do_not_phone is no yes/no: the row cannot be read
        "2,yes,yes,perhaps",
    )
    records, problems = read_all(make_adapter(mapping=mapping))
    assert records == []
    assert [(p.key, p.field) for p in problems] == [("1", "do_not_phone"), ("2", "do_not_phone")]
    assert problems[0].consent == {"contact_me": consent_state(False, "csv:people")}
    assert problems[1].consent is None  # nothing refused: held as it was
