"""Consent is read one way through every door (issue 11, observation 4), via the public CLI.

Only an explicit yes is consent: in sync, in `policy preview` of any input, in policy test
fixtures and in `policy explain`. Rows of one person that disagree are no consent.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from tests.integration.test_cli import run

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}
NOT_YES = ("no", "false", "0", "withdrawn", "No ", "FALSE")


def _person(pid: str, value: object) -> dict[str, object]:
    return {
        "id": pid,
        "first_name": f"P{pid}",
        "region": "North",
        "consent": {"contact_me": True, "local_organizing": value},
    }


def test_preview_of_jsonl_counts_only_an_explicit_yes(
    runner: CliRunner, demo: Path, tmp_path: Path
) -> None:
    people = tmp_path / "people.jsonl"
    values = [*NOT_YES, {"granted": "no"}, "yes", "perhaps-secret"]
    people.write_text("".join(json.dumps(_person(str(i), v)) + "\n" for i, v in enumerate(values)))
    policy = demo.parent.parent / "policies" / "organizers-north.yaml"
    result = run(
        runner, "policy", "preview", str(policy), "--input", str(people), "--json", cwd=demo
    )
    assert result.exit_code == 0, result.output
    shared = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["first_name"] for p in shared] == [f"P{len(values) - 2}"]
    assert (
        f"skipped: {people}:{len(values)}: record '{len(values) - 1}', "
        "field 'consent.local_organizing': expected an explicit yes or no"
    ) in result.stderr
    assert "perhaps-secret" not in result.output


def test_a_policy_test_fixture_saying_no_is_no_consent(runner: CliRunner, demo: Path) -> None:
    policies = demo.parent.parent / "policies"
    cases = "".join(
        f"  - name: says {value!r}\n"
        f"    record: {json.dumps(_person('1', value))}\n"
        "    expect: {decision: share}\n"
        for value in NOT_YES
    )
    test_file = policies / "values_test.yaml"
    test_file.write_text(
        f"policy: organizers-north.yaml\nfloor: network-floor.yaml\ncases:\n{cases}"
    )
    result = run(runner, "policy", "test", str(test_file), cwd=demo)
    assert result.exit_code == 1, result.output
    assert result.stdout.count("FAIL") == len(NOT_YES), result.stdout
    assert "consent:local_organizing" in result.stdout


def test_explain_refuses_a_record_whose_consent_is_neither_yes_nor_no(
    runner: CliRunner, demo: Path, tmp_path: Path
) -> None:
    record = tmp_path / "person.yaml"
    record.write_text(json.dumps(_person("1", "ask-me-later")))
    policy = demo.parent.parent / "policies" / "organizers-north.yaml"
    result = run(runner, "policy", "explain", str(policy), "--record", str(record), cwd=demo)
    assert result.exit_code == 3, result.output
    assert "'consent.local_organizing': expected an explicit yes or no" in result.stderr
    assert "ask-me-later" not in result.output
    assert "Traceback" not in result.output


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _add_row(demo: Path, pid: str, **changes: str) -> None:
    """Append a second row for `pid` to the demo's members, with `changes` to its cells."""
    path = demo / "data" / "members.csv"
    rows = _rows(path)
    rows.append({**next(r for r in rows if r["Contact ID"] == pid), **changes})
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _names(demo: Path) -> list[str]:
    rows = _rows(demo / "out" / "organizers-north.csv")
    return sorted(f"{r['first_name']} {r['last_name']}" for r in rows)


def _name(person: dict[str, str]) -> str:
    return f"{person['First Name']} {person['Last Name']}"


def test_a_duplicate_id_saying_yes_then_no_is_not_shared(runner: CliRunner, demo: Path) -> None:
    person = next(r for r in _rows(demo / "data" / "members.csv") if r["Contact ID"] == "M0018")
    _add_row(demo, "M0018", **{"Local organizing OK": "no"})
    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 1, result.output  # the duplicate is a reported problem
    assert _name(person) not in _names(demo)
    assert len(_names(demo)) == 6
    assert "skipped:" in result.stderr
    assert "expected one row per key (rows sharing a key are merged" in result.stderr


def test_rows_that_disagree_hold_the_person_and_a_stated_no_takes_back(
    runner: CliRunner, demo: Path
) -> None:
    first = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert first.exit_code == 0, first.output
    before = _names(demo)
    person = next(r for r in _rows(demo / "data" / "members.csv") if r["Contact ID"] == "M0018")
    assert _name(person) in before

    _add_row(demo, "M0018", City="Elsewhere")  # which city? nobody can say: held
    held = run(runner, "run", "organizers-north", "--json", cwd=demo, env=ENV)
    assert held.exit_code == 1, held.output
    assert _names(demo) == before  # neither updated nor taken back
    assert json.loads(held.stdout)[0]["counts"]["deleted"] == 0

    _add_row(demo, "M0018", City="Elsewhere", **{"Local organizing OK": "no"})
    withdrawn = run(runner, "run", "organizers-north", "--json", cwd=demo, env=ENV)
    assert withdrawn.exit_code == 1, withdrawn.output
    assert _name(person) not in _names(demo)


def _typed(pid: str, **fields: object) -> dict[str, object]:
    consent = {"contact_me": True, "local_organizing": True}
    return {"id": pid, "first_name": f"P{pid}", "region": "North", "consent": consent, **fields}


def test_preview_reads_typed_fields_as_sync_does(
    runner: CliRunner, demo: Path, tmp_path: Path
) -> None:
    """`is_deceased: "yes"` is read as yes (withheld), as sync reads it; a value that is no
    yes/no is reported without its value, and the record skipped."""
    people = tmp_path / "people.jsonl"
    rows = [
        _typed("1", is_deceased="yes"),
        _typed("2", do_not_phone="TRUE"),
        _typed("3", is_deceased="perhaps-secret"),
        _typed("4", is_deceased="no", do_not_phone="0"),
    ]
    people.write_text("".join(json.dumps(r) + "\n" for r in rows))
    policy = demo.parent.parent / "policies" / "organizers-north.yaml"
    result = run(
        runner, "policy", "preview", str(policy), "--input", str(people), "--json", cwd=demo
    )
    assert result.exit_code == 0, result.output
    shared = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["first_name"] for p in shared] == ["P4"]
    assert f"skipped: {people}:3: record '3', field 'is_deceased': expected" in result.stderr
    assert "perhaps-secret" not in result.output
    assert "withheld 1: forbid:network-floor:deceased" in result.stderr


def test_a_policy_test_fixture_reads_typed_fields_as_sync_does(
    runner: CliRunner, demo: Path
) -> None:
    policies = demo.parent.parent / "policies"
    test_file = policies / "typed_test.yaml"
    test_file.write_text(
        "policy: organizers-north.yaml\nfloor: network-floor.yaml\ncases:\n"
        f"  - name: deceased as text\n    record: {json.dumps(_typed('1', is_deceased='yes'))}\n"
        '    expect: {decision: withhold, reason: "forbid:network-floor:deceased"}\n'
        f"  - name: unreadable\n    record: {json.dumps(_typed('2', do_not_phone='sekrit'))}\n"
        "    expect: {decision: share}\n"
    )
    result = run(runner, "policy", "test", str(test_file), cwd=demo)
    assert result.exit_code == 1, result.output
    assert "PASS" in result.stdout.splitlines()[0]
    assert "record: 'do_not_phone': expected" in result.stdout
    assert "sekrit" not in result.output
