"""Open what the CSV adapter writes in a real spreadsheet program: no cell becomes a formula.

LibreOffice Calc (headless) imports the files as a recipient's double click would, with
formula evaluation switched on, and converts them to xlsx; the xlsx holds an ``<f>`` element
for every formula cell. One conversion covers every hostile value. CI installs
libreoffice-calc (scripts/services); elsewhere the test is skipped without it.
"""

from __future__ import annotations

import itertools
import subprocess
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from connector_csv import CsvAdapter, CsvSettings

from connector_core.adapters import Change

NS = {"x": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
#: separator, text delimiter, UTF-8, from line 1, -, language, quoted as text: no, detect
#: special numbers, -, -, trim spaces: no, -, evaluate formulas: yes (LibreOffice 7.3+).
CSV_IMPORT = "CSV:44,34,76,1,,0,false,true,false,false,false,-1,true"

PREFIXES = ["", " ", "\u00a0", "\u3000", "\n", "\r\n", "\t", "\r", "\x00", "\x01\x1b"]
PREFIXES += ["\u200b", "\ufeff", "'", "' "]
STARTS = ["=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20", "\ufe66", "\u207c", "\u2212"]
PAYLOADS = ["1+1", 'HYPERLINK("http://evil.example";"x")', "SUM(A1:A2)", "cmd|' /C calc'!A0"]
HOSTILE = ["".join(parts) for parts in itertools.product(PREFIXES, STARTS, PAYLOADS)]
PHONES = ["+44 20 7946 0958", "+1-555-0100", "+1 (555) 010-0100", "+33.1.23.45.67.89"]


def write_csv(path: Path, values: list[str], **settings: Any) -> None:
    mapping = {"first_name": "value"}
    adapter = CsvAdapter(CsvSettings(path=path, **settings), mapping=mapping, connection="t")
    changes = [
        Change.upsert(f"k{i}", {"id": f"k{i}", "first_name": v}) for i, v in enumerate(values)
    ]
    assert all(r.ok for r in adapter.write(changes))


def convert(soffice: str, folder: Path, *sources: Path) -> None:
    profile = (folder / "lo-profile").as_uri()  # its own profile: runs never share one
    command = [soffice, f"-env:UserInstallation={profile}", "--headless", "--norestore"]
    command += ["--infilter=" + CSV_IMPORT, "--convert-to", "xlsx", "--outdir", str(folder)]
    subprocess.run([*command, *map(str, sources)], check=True, capture_output=True, timeout=180)


def column_b(xlsx: Path) -> list[tuple[bool, str]]:
    """(is a formula, shown text) of every data cell in column B of the first sheet."""
    with zipfile.ZipFile(xlsx) as book:
        sheet = ElementTree.fromstring(book.read("xl/worksheets/sheet1.xml"))
        strings = ElementTree.fromstring(book.read("xl/sharedStrings.xml"))
    shared = ["".join(t.text or "" for t in si.iterfind(".//x:t", NS)) for si in strings]
    cells = []
    for cell in sheet.iterfind(".//x:c", NS):
        if not cell.get("r", "").startswith("B") or cell.get("r") == "B1":
            continue
        value = cell.findtext("x:v", "", NS)
        text = shared[int(value)] if cell.get("t") == "s" else value
        cells.append((cell.find("x:f", NS) is not None, text))
    return cells


def test_libreoffice_runs_no_cell_the_csv_adapter_wrote(soffice: str, tmp_path: Path) -> None:
    hostile, phones, control = (tmp_path / f"{n}.csv" for n in ("hostile", "phones", "control"))
    write_csv(hostile, HOSTILE)
    write_csv(phones, PHONES, phone_numbers="plain")
    write_csv(control, ["=1+1", "\x00=2+2", "+44 20 7946 0958"], neutralize_formulas=False)
    convert(soffice, tmp_path, hostile, phones, control)

    # The harness sees formulas: unguarded, LibreOffice runs =1+1 and drops a NUL before =.
    assert column_b(tmp_path / "control.xlsx") == [
        (True, "2"),
        (True, "4"),
        (False, "+44 20 7946 0958"),  # why phone_numbers: plain is offered
    ]
    cells = column_b(tmp_path / "hostile.xlsx")
    assert len(cells) == len(HOSTILE) == 616
    assert not [text for formula, text in cells if formula]
    assert all(text.startswith("'") for _, text in cells)  # LibreOffice shows the quote
    assert column_b(tmp_path / "phones.xlsx") == [(False, p) for p in PHONES]
