"""A malformed cell is reported by record key, column and what was expected, never by its
value: not in the `skipped:` line, `run --json`, the log, the state database or the target."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_cli import run

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}
# Column -> the canonical field it holds; every one is typed (yes/no, number, date, time).
TYPED = {
    "Deceased": "is_deceased",
    "No email": "do_not_email",
    "No phone": "do_not_phone",
    "No post": "do_not_mail",
    "No texts": "do_not_sms",
    "Lat": "latitude",
    "Lon": "longitude",
    "Born": "birth_date",
    "Changed": "modified_at",
    "Local OK": "consent.local_organizing",
}
GOOD = {
    "Deceased": "no",
    "No email": "no",
    "No phone": "no",
    "No post": "",
    "No texts": "0",
    "Lat": "53.8",
    "Lon": "-1.5",
    "Born": "1990-04-01",
    "Changed": "2026-01-02T03:04:05",
    "Local OK": "yes",
}
MAPPING = "\n".join(f"      {field}: {column}" for column, field in TYPED.items())
CONFIG = f"""\
version: 1
network: {{name: Values, hash_key: {{env: CONNECTOR_DEMO_HASH_KEY}}}}
consent: {{purposes: {{local_organizing: {{description: Local}}}}}}
connections:
  members:
    adapter: csv
    settings: {{path: members.csv, key_column: Id}}
    mapping:
      first_name: Name
{MAPPING}
  north:
    adapter: csv
    settings: {{path: north.csv}}
jobs:
  north:
    source: members
    target: north
    policy: north.yaml
"""
POLICY = """\
policy: north
require_consent: [local_organizing]
rules:
  - allow: everyone who agreed
  - forbid: never shared, yet read to decide
    when:
      any:
        - is_deceased: true
        - do_not_email: true
        - do_not_phone: true
        - do_not_mail: true
        - do_not_sms: true
        - latitude: {gt: 90}
        - longitude: {gt: 180}
        - birth_date: {gt: {days_ago: 0}}
        - modified_at: {gt: {days_ago: 0}}
fields:
  first_name: show
"""
# Sentinels: text no message uses, and no column can read (not yes/no, a number or a date).
SENTINELS = st.text(alphabet="ÆØÅæøåÐðÞþ", min_size=4, max_size=12).map(lambda s: f"Zq{s}")


@pytest.fixture
def network(tmp_path: Path) -> Path:
    (tmp_path / "connector.yaml").write_text(CONFIG)
    (tmp_path / "north.yaml").write_text(POLICY)
    return tmp_path


def write_members(folder: Path, bad: dict[str, dict[str, str]]) -> None:
    """Rows M1..M3 with good cells, except the `bad` cells by key and column."""
    with (folder / "members.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, ["Id", "Name", *TYPED])
        writer.writeheader()
        for key in ("M1", "M2", "M3"):
            writer.writerow({"Id": key, "Name": f"Person {key}", **GOOD, **bad.get(key, {})})


def run_twice(runner: CliRunner, folder: Path) -> tuple[Result, Result]:
    text = run(runner, "-v", "run", "north", cwd=folder, env=ENV)
    as_json = run(
        runner,
        *("-v", "--log-format", "json", "run", "north", "--json", "--reconcile"),
        cwd=folder,
        env=ENV,
    )
    return text, as_json


def everything_written(folder: Path, results: tuple[Result, ...], logs: str) -> str:
    """Every output, log line, stored row and file the runs produced, as one text."""
    parts = [r.stdout + r.stderr for r in results] + [logs]
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "members.csv":
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    for db in folder.rglob("*.db"):
        with sqlite3.connect(db) as conn:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                parts.append(repr(conn.execute(f'SELECT * FROM "{table}"').fetchall()))
    return "\n".join(parts)


def test_a_malformed_cell_is_reported_without_its_value(
    runner: CliRunner, network: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_members(network, {"M2": {"Deceased": "maybe-secret-value"}})
    caplog.set_level(logging.DEBUG)
    text, as_json = run_twice(runner, network)
    assert text.exit_code == 1, text.output
    skipped = [line for line in text.stderr.splitlines() if "skipped:" in line]
    assert skipped == [
        f"  skipped: {network / 'members.csv'}:3: record 'M2', field 'Deceased': "
        "expected a yes/no value (yes/no, true/false or 1/0)"
    ]
    summary = json.loads(as_json.stdout)[0]
    assert summary["problems"] == [skipped[0].removeprefix("  skipped: ")]
    assert "maybe-secret-value" not in everything_written(network, (text, as_json), caplog.text)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    bad=st.dictionaries(
        st.sampled_from(["M1", "M2", "M3"]),
        st.dictionaries(st.sampled_from(sorted(TYPED)), SENTINELS, min_size=1),
        min_size=1,
    )
)
def test_no_malformed_cell_reaches_any_output(
    runner: CliRunner,
    network: Path,
    caplog: pytest.LogCaptureFixture,
    bad: dict[str, dict[str, str]],
) -> None:
    for stale in network.iterdir():  # each example starts from a fresh network
        if stale.name not in ("connector.yaml", "north.yaml"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    write_members(network, bad)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    results = run_twice(runner, network)
    assert all(r.exit_code == 1 for r in results), [r.output for r in results]
    written = everything_written(network, results, caplog.text)
    for cells in bad.values():
        for sentinel in cells.values():
            assert sentinel not in written
            assert json.dumps(sentinel)[1:-1] not in written  # nor in its escaped form
    text = results[0].stderr
    for key in bad:
        assert any(f"record {key!r}, field " in line for line in text.splitlines()), text


def test_a_record_that_becomes_unreadable_is_not_taken_back(
    runner: CliRunner, network: Path
) -> None:
    """An unreadable row is no evidence that the person left: what the target holds stays."""
    write_members(network, {})
    first = run(runner, "run", "north", cwd=network, env=ENV)
    assert first.exit_code == 0, first.output
    write_members(network, {"M2": {"Born": "Zq-later"}, "M3": {"No phone": "Zq-maybe"}})
    second = run(runner, "run", "north", cwd=network, env=ENV)
    assert second.exit_code == 1, second.output
    assert "deleted 0" in second.stdout, second.stdout
    with (network / "north.csv").open(newline="", encoding="utf-8") as file:
        assert len(list(csv.DictReader(file))) == 3


def test_a_row_without_a_readable_key_holds_back_takebacks_of_missing_rows(
    runner: CliRunner, network: Path
) -> None:
    write_members(network, {})
    assert run(runner, "run", "north", cwd=network, env=ENV).exit_code == 0
    rows = (network / "members.csv").read_text(encoding="utf-8").splitlines()
    ragged = rows[2] + ",an extra cell"  # M2: its cells no longer line up with the header
    (network / "members.csv").write_text("\n".join([rows[0], rows[1], ragged]) + "\n")  # M3 gone
    second = run(runner, "run", "north", cwd=network, env=ENV)
    assert second.exit_code == 1, second.output
    assert "deleted 0" in second.stdout, second.stdout
    (network / "members.csv").write_text("\n".join(rows[:3]) + "\n")  # fixed: M3 is gone
    third = run(runner, "run", "north", cwd=network, env=ENV)
    assert third.exit_code == 0, third.output
    assert "deleted 1" in third.stdout, third.stdout


def test_preview_reports_unreadable_input_without_values_or_tracebacks(
    runner: CliRunner, network: Path
) -> None:
    write_members(network, {"M2": {"Deceased": "Zq-csv"}})
    jsonl = network / "people.jsonl"
    jsonl.write_text(
        '{"id": "J1", "first_name": "Ada", "consent": {"local_organizing": true}}\n'
        '{"id": "J2", "first_name": "Zq-json\n' + "[" * 100_000 + "\n" + '["Zq-list"]\n'
    )
    policy = str(network / "north.yaml")
    from_csv = run(runner, "policy", "preview", policy, "--input", "members", cwd=network)
    from_json = run(runner, "policy", "preview", policy, "--input", str(jsonl), cwd=network)
    for result in (from_csv, from_json):
        assert result.exit_code == 0, result.output
        assert "Zq-" not in result.output
    assert (
        f"skipped: {network / 'members.csv'}:3: record 'M2', field 'Deceased': expected a yes/no"
        in (from_csv.stderr)
    )
    skipped = [line for line in from_json.stderr.splitlines() if line.startswith("skipped:")]
    assert skipped == [
        f"skipped: {jsonl}:{n}: expected a JSON object on one line (one record per line)"
        for n in (2, 3, 4)
    ]
