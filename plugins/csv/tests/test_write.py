"""Writing: results, header and row order, quoting, formula injection and atomic replacement."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from connector_csv import CsvAdapter

from connector_core.adapters import Change, ReadProblem, WriteResult
from connector_core.errors import AdapterError
from connector_core.records import FIELDS, Record

MakeAdapter = Callable[..., CsvAdapter]
ReadAll = Callable[..., tuple[list[Record], list[ReadProblem]]]


def only(*names: str, **renamed: str) -> dict[str, str | None]:
    """A mapping that keeps just `names` (as same-named columns) and the `renamed` fields."""
    mapping: dict[str, str | None] = {name: None for name in FIELDS if name != "consent"}
    mapping.update({name: name for name in names})
    mapping.update({name.replace("__", "."): column for name, column in renamed.items()})
    return mapping


def text(path: Path) -> str:
    """The file's text with its line breaks as they are."""
    return path.read_bytes().decode()


def write(adapter: CsvAdapter, *changes: Change) -> list[tuple[str, str]]:
    return [(r.key, r.action) for r in adapter.write(changes)]


def upsert(key: str, **fields: Any) -> Change:
    return Change.upsert(key, {"id": key, **fields})


# -- results and layout ------------------------------------------------------------------------


def test_a_new_file_has_key_fields_consent_then_extras(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    mapping = only("city", "email", extra__csv__shirt="Shirt", consent__contact_me="Newsletter")
    adapter = make_adapter(mapping=mapping)
    record = {
        "email": "a@example.org",
        "city": None,
        "extra.csv.shirt": "M",
        "consent": {"contact_me": {"granted": True}},
    }
    assert write(adapter, Change.upsert("1", record)) == [("1", "created")]
    assert text(csv_path) == "id,email,city,Newsletter,Shirt\r\n1,a@example.org,,yes,M\r\n"


def test_a_new_file_has_only_the_columns_the_records_carry(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    """A recipient's file has no empty columns for fields its policy never shares."""
    write(make_adapter(), upsert("1", phone="1234", first_name="Ana", city=None))
    header = text(csv_path).splitlines()[0].split(",")
    assert header == ["id", "first_name", "phone", "city"]  # registry order


def test_results_follow_the_changes(make_adapter: MakeAdapter, read_all: ReadAll) -> None:
    adapter = make_adapter(mapping=only("email"))
    results = write(
        adapter,
        upsert("a", email="a@example.org"),
        upsert("b", email="b@example.org"),
        upsert("a", email="a@example.org"),
        upsert("a", email="new@example.org"),
        Change.delete("b"),
        Change.delete("never-there"),
    )
    assert results == [
        ("a", "created"),
        ("b", "created"),
        ("a", "unchanged"),
        ("a", "updated"),
        ("b", "deleted"),
        ("never-there", "unchanged"),
    ]
    assert read_all(adapter) == ([{"id": "a", "email": "new@example.org"}], [])


def test_existing_header_rows_and_unmapped_columns_are_kept(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    csv_path.write_text("id,notes,email\n2,keep me,b@example.org\n1,private,a@example.org\n")
    adapter = make_adapter(mapping=only("email", "city", "phone"))
    results = write(
        adapter,
        upsert("1", email="a2@example.org", city="Berlin", phone=None),
        upsert("3", email="c@example.org"),
    )
    assert results == [("1", "updated"), ("3", "created")]
    assert text(csv_path) == (
        "id,notes,email,city\n"
        "2,keep me,b@example.org,\n"
        "1,private,a2@example.org,Berlin\n"
        "3,,c@example.org,\n"
    )


def test_an_upsert_replaces_every_mapped_column(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    csv_path.write_text("id,email,city\n1,a@example.org,Berlin\n")
    adapter = make_adapter(mapping=only("email", "city"))
    assert write(adapter, upsert("1", email="a@example.org")) == [("1", "updated")]
    assert read_all(adapter)[0] == [{"id": "1", "email": "a@example.org", "city": None}]


def test_deleting_a_repeated_key_removes_every_row(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    csv_path.write_text("id,email\n1,a\n2,b\n1,c\n")
    assert write(make_adapter(mapping=only("email")), Change.delete("1")) == [("1", "deleted")]
    assert text(csv_path) == "id,email\n2,b\n"


def test_values_round_trip(make_adapter: MakeAdapter, read_all: ReadAll) -> None:
    mapping = only(
        "groups",
        "birth_date",
        "do_not_email",
        "latitude",
        "street_address",
        consent__contact_me="Newsletter",
        consent__share_with_partners="Partners",
        extra__csv__shirt="Shirt",
    )
    adapter = make_adapter(mapping=mapping, page_size=1)
    record: Record = {
        "id": "1",
        "groups": ["Climate & Energy", "Housing"],
        "birth_date": "1990-02-03",
        "do_not_email": False,
        "latitude": -23.5505,
        "street_address": '12 "Rue", de la Paix\nBâtiment B',
        "consent": {"contact_me": {"granted": True, "source": "civicrm", "at": None}},
        "extra.csv.shirt": "XL",
    }
    write(adapter, Change.upsert("1", record))
    [back], problems = read_all(adapter)
    assert problems == []
    assert back == record | {
        "consent": {"contact_me": {**record["consent"]["contact_me"], "source": "csv:people"}}
    }


# -- failures ----------------------------------------------------------------------------------


def test_unwritable_values_fail_alone(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    adapter = make_adapter(
        mapping=only("email", "groups", "birth_date", "do_not_email"), encoding="latin-1"
    )
    results = list(
        adapter.write(
            [
                upsert("1", email="a@example.org"),
                upsert("2", email={"home": "secret@example.org"}),
                upsert("3", groups=["a;b"]),
                upsert("4", birth_date="soon"),
                upsert("5", do_not_email="no"),
                upsert("6", email="小龙@example.org"),
                Change("upsert", "7"),
                upsert(" "),
                upsert("8", email="h@example.org"),
            ]
        )
    )
    assert [(r.key, r.action, r.error) for r in results] == [
        ("1", "created", None),
        ("2", "failed", "email: a dict cannot be written as a string value"),
        ("3", "failed", "groups: list items cannot contain ';' or '|'"),
        ("4", "failed", "birth_date: the value is not a date (YYYY-MM-DD)"),
        ("5", "failed", "do_not_email: a str cannot be written as a boolean value"),
        ("6", "failed", "email: has characters that latin-1 cannot store"),
        ("7", "failed", "an upsert needs a record"),
        (" ", "failed", "the key is empty"),
        ("8", "created", None),
    ]
    assert not any("secret" in (r.error or "") for r in results)
    assert [r["id"] for r in read_all(adapter)[0]] == ["1", "8"]


def test_a_failed_replace_leaves_the_old_file_and_no_temporary_file(
    csv_path: Path, tmp_path: Path, make_adapter: MakeAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_path.write_text("id,email\n1,a@example.org\n")
    before = csv_path.read_bytes()

    def refuse(src: str, dst: str, **dir_fds: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(AdapterError, match=r"cannot write .*people\.csv: No space left on device"):
        write(make_adapter(mapping=only("email")), upsert("2", email="b@example.org"))
    assert csv_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people.csv"]


def test_an_interrupted_write_cleans_up(
    csv_path: Path, tmp_path: Path, make_adapter: MakeAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_path.write_text("id,email\n1,a@example.org\n")
    before = csv_path.read_bytes()

    def interrupt(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write(make_adapter(mapping=only("email")), upsert("2", email="b@example.org"))
    assert csv_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people.csv"]


def test_a_malformed_existing_row_blocks_the_write(
    csv_path: Path, make_adapter: MakeAdapter
) -> None:
    csv_path.write_text('id,email\n1,"a"b\n')
    with pytest.raises(AdapterError, match=r"people\.csv:2: malformed CSV") as info:
        write(make_adapter(mapping=only("email")), upsert("2", email="b@example.org"))
    assert info.value.hint is not None
    assert "would lose it" in info.value.hint
    assert text(csv_path) == 'id,email\n1,"a"b\n'


def test_writing_into_a_missing_folder_is_an_error(
    tmp_path: Path, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter(path=tmp_path / "nowhere" / "people.csv")
    with pytest.raises(AdapterError, match=r"the folder .*nowhere does not exist"):
        write(adapter, upsert("1"))


# -- what a rewrite keeps ----------------------------------------------------------------------


def test_nothing_changed_means_no_rewrite(csv_path: Path, make_adapter: MakeAdapter) -> None:
    csv_path.write_text("id,email\n1,a@example.org\n")
    before = csv_path.stat()
    results = write(
        make_adapter(mapping=only("email")), upsert("1", email="a@example.org"), Change.delete("9")
    )
    assert results == [("1", "unchanged"), ("9", "unchanged")]
    after = csv_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_untouched_rows_keep_their_bytes(csv_path: Path, make_adapter: MakeAdapter) -> None:
    csv_path.write_bytes(b"id,city\r\n1,K\xf6ln\r\n2,Cork,ragged\r\n")
    write(make_adapter(mapping=only("city")), upsert("3", city="Lagos"))
    assert csv_path.read_bytes() == b"id,city\r\n1,K\xf6ln\r\n2,Cork,ragged\r\n3,Lagos\r\n"


@pytest.mark.parametrize(
    ("existing", "write_bom", "starts_with_bom"),
    [
        (None, False, False),
        (None, True, True),
        (b"id\r\n", False, False),
        (b"\xef\xbb\xbfid\r\n", False, True),
    ],
    ids=["new", "new-write_bom", "existing", "existing-bom-kept"],
)
def test_byte_order_mark(
    csv_path: Path,
    make_adapter: MakeAdapter,
    existing: bytes | None,
    write_bom: bool,
    starts_with_bom: bool,
) -> None:
    if existing is not None:
        csv_path.write_bytes(existing)
    write(make_adapter(mapping=only(), write_bom=write_bom), upsert("1"))
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf") is starts_with_bom
    assert csv_path.read_bytes().endswith(b"id\r\n1\r\n")


def test_permissions(csv_path: Path, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(mapping=only())
    write(adapter, upsert("1"))
    assert csv_path.stat().st_mode & 0o777 == 0o600  # personal data: owner only
    csv_path.chmod(0o640)
    write(adapter, upsert("2"))
    assert csv_path.stat().st_mode & 0o777 == 0o640


# -- dialect -----------------------------------------------------------------------------------

RECORD = {"first_name": 'Ada "The" Countess', "city": "Köln, Nord", "latitude": -12.5}


@pytest.mark.parametrize(
    ("quoting", "expected"),
    [
        (
            "minimal",
            'id,first_name,city,latitude\r\n1,"Ada ""The"" Countess","Köln, Nord",-12.5\r\n',
        ),
        (
            "all",
            '"id","first_name","city","latitude"\r\n'
            '"1","Ada ""The"" Countess","Köln, Nord","-12.5"\r\n',
        ),
        (
            "nonnumeric",
            '"id","first_name","city","latitude"\r\n'
            '1,"Ada ""The"" Countess","Köln, Nord",-12.5\r\n',
        ),
        ("none", 'id,first_name,city,latitude\r\n1,Ada \\"The\\" Countess,Köln\\, Nord,-12.5\r\n'),
    ],
)
def test_quoting_modes(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll, quoting: str, expected: str
) -> None:
    adapter = make_adapter(mapping=only("first_name", "city", "latitude"), quoting=quoting)
    write(adapter, Change.upsert("1", RECORD))
    assert text(csv_path) == expected
    assert read_all(adapter) == ([{"id": "1", **RECORD}], [])


def test_semicolon_files_stay_semicolon(csv_path: Path, make_adapter: MakeAdapter) -> None:
    csv_path.write_text("id;city\n1;Köln\n")
    write(make_adapter(mapping=only("city"), delimiter=";"), upsert("2", city="Cork; North"))
    assert text(csv_path) == 'id;city\n1;Köln\n2;"Cork; North"\n'


# -- formula injection -------------------------------------------------------------------------

PAYLOADS = [
    '=HYPERLINK("http://evil.example","click")',
    "+1 555 0100",
    "-2+3",
    "@SUM(A1:A9)",
    "\tx",
    "\rx",
]


def test_formulas_are_neutralized_and_read_back_unchanged(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    adapter = make_adapter(mapping=only("first_name"))
    write(adapter, *(upsert(str(i), first_name=p) for i, p in enumerate(PAYLOADS)))
    written = text(csv_path)
    for fragment in ["'=HYPERLINK(", "'+1 555", "'-2+3", "'@SUM(", "'\tx", '"\'\rx"']:
        assert fragment in written
    with csv_path.open(newline="") as raw:
        cells = [row[1] for row in csv.reader(raw)][1:]
    assert cells == ["'" + p for p in PAYLOADS]
    assert [r["first_name"] for r in read_all(adapter)[0]] == PAYLOADS


@pytest.mark.parametrize(
    ("value", "written"),
    [("-12.5", "-12.5"), ("'=x", "''=x"), ("'plain", "'plain"), ("=1", "'=1")],
)
def test_neutralizing_is_lossless(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll, value: str, written: str
) -> None:
    adapter = make_adapter(mapping=only("first_name"))
    write(adapter, upsert("1", first_name=value))
    assert text(csv_path).splitlines()[1] == f"1,{written}"
    assert read_all(adapter)[0] == [{"id": "1", "first_name": value}]


def test_keys_are_neutralized_too(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    adapter = make_adapter(mapping=only())
    assert write(adapter, upsert("=1+1")) == [("=1+1", "created")]
    assert text(csv_path) == "id\r\n'=1+1\r\n"
    assert write(adapter, upsert("=1+1")) == [("=1+1", "unchanged")]
    assert read_all(adapter)[0] == [{"id": "=1+1"}]


HIDDEN_FORMULAS = [
    "\uff1dHYPERLINK(1)",  # FULLWIDTH EQUALS SIGN
    "\uff0b1+2",  # FULLWIDTH PLUS SIGN
    "\uff0d1+2",  # FULLWIDTH HYPHEN-MINUS
    "\uff20SUM(A1)",  # FULLWIDTH COMMERCIAL AT
    " =1+1",
    "\u00a0=1+1",  # NO-BREAK SPACE
    "\n=1+1",
    "\u200b@x",  # ZERO WIDTH SPACE
]


@pytest.mark.parametrize("payload", HIDDEN_FORMULAS, ids=repr)
def test_formulas_in_disguise_are_neutralized_too(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll, payload: str
) -> None:
    adapter = make_adapter(mapping=only("first_name"))
    write(adapter, upsert("1", first_name=payload))
    with csv_path.open(newline="", encoding="utf-8") as raw:
        assert [row[1] for row in csv.reader(raw)][1:] == ["'" + payload]
    assert [r["first_name"] for r in read_all(adapter)[0]] == [payload]


@pytest.mark.parametrize("formulas", [True, False])
def test_control_characters_never_reach_the_file(
    csv_path: Path, make_adapter: MakeAdapter, formulas: bool
) -> None:
    adapter = make_adapter(mapping=only("first_name", "city"), neutralize_formulas=formulas)
    write(adapter, upsert("1", first_name="\x00=1+1", city="Le\x00eds\x1b\x7f\x85"))
    data = csv_path.read_bytes().decode("utf-8")
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", data)
    assert ("'=1+1" if formulas else ",=1+1") in data
    assert "Leeds" in data


def test_phone_numbers_are_prefixed_by_default_and_plain_when_asked(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    values = {"phone": "+44 20 7946 0958", "first_name": "+1+cmd"}
    write(make_adapter(mapping=only("phone", "first_name")), upsert("1", **values))
    assert text(csv_path).splitlines()[1] == "1,'+1+cmd,'+44 20 7946 0958"
    csv_path.unlink()
    adapter = make_adapter(mapping=only("phone", "first_name"), phone_numbers="plain")
    write(adapter, upsert("1", **values))
    assert text(csv_path).splitlines()[1] == "1,'+1+cmd,+44 20 7946 0958"
    assert read_all(adapter)[0] == [{"id": "1", **values}]


def test_neutralizing_can_be_switched_off(
    csv_path: Path, make_adapter: MakeAdapter, read_all: ReadAll
) -> None:
    adapter = make_adapter(mapping=only("first_name"), neutralize_formulas=False)
    write(adapter, upsert("1", first_name="=1+1"), upsert("2", first_name="'=x"))
    assert text(csv_path) == "id,first_name\r\n1,=1+1\r\n2,'=x\r\n"
    assert [r["first_name"] for r in read_all(adapter)[0]] == ["=1+1", "'=x"]


def test_write_results_are_write_results(make_adapter: MakeAdapter) -> None:
    results = list(make_adapter(mapping=only()).write([upsert("1")]))
    assert results == [WriteResult("1", "created")]
