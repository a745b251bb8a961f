"""`connector policy ...` and `connector schema policy` end to end on the demo network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.test_cli import run

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}


@pytest.fixture
def policies(demo: Path) -> Path:
    return demo.parent.parent / "policies"


def test_check_reports_ok_and_warnings(runner: CliRunner, demo: Path, policies: Path) -> None:
    result = run(
        runner,
        "policy",
        "check",
        str(policies / "organizers-north.yaml"),
        str(policies / "public-map.yaml"),
        cwd=demo,
    )
    assert result.exit_code == 0, result.output
    assert "policy organizers-north, 2 rule(s)" in result.stdout


def test_check_reports_errors_with_locations(runner: CliRunner, demo: Path, policies: Path) -> None:
    bad = policies / "bad.yaml"
    bad.write_text(
        "policy: bad\nrequire_consent: [local_organising]\nrules:\n"
        "  - allow: all\n    when: {regoin: North}\nfields: {phone: last5}\n"
    )
    result = run(runner, "policy", "check", str(bad), cwd=demo)
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert any(
        f"{bad}:2:" in line and "did you mean 'local_organizing'" in line for line in lines
    ), result.stderr
    assert any(f"{bad}:5:" in line and "did you mean 'region'" in line for line in lines)
    assert any(f"{bad}:6:" in line and "did you mean 'last4'" in line for line in lines)
    assert "Traceback" not in result.output


def test_policy_tests_pass_and_fail(runner: CliRunner, demo: Path, policies: Path) -> None:
    result = run(runner, "policy", "test", str(policies), cwd=demo)
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.stderr
    test_file = policies / "organizers-north_test.yaml"
    test_file.write_text(
        test_file.read_text().replace(
            "first_name: Ana\n        last_name", "first_name: Anna\n        last_name"
        )
    )
    result = run(runner, "policy", "test", str(test_file), cwd=demo)
    assert result.exit_code == 1
    assert "FAIL" in result.stdout
    assert "first_name: expected 'Anna', got 'Ana'" in result.stdout


def test_explain_shows_consent_rules_and_fields(
    runner: CliRunner, demo: Path, policies: Path, tmp_path: Path
) -> None:
    record = tmp_path / "person.yaml"
    record.write_text(
        "id: M1\nfirst_name: Ana\nregion: South West\nstreet_address: 1 Mill Lane\n"
        "consent: {contact_me: true, local_organizing: true}\n"
    )
    result = run(
        runner,
        "policy",
        "explain",
        str(policies / "organizers-north.yaml"),
        "--record",
        str(record),
        cwd=demo,
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "local_organizing" in out
    assert "supporters in the North" in out
    assert "North" in out
    assert "South West" in out
    assert "street_address" in out
    assert "no-allow:organizers-north" in out


def test_preview_counts_withheld_by_reason(runner: CliRunner, demo: Path, policies: Path) -> None:
    result = run(
        runner,
        "policy",
        "preview",
        str(policies / "organizers-north.yaml"),
        "--input",
        "members",
        "--json",
        "--limit",
        "0",
        cwd=demo,
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    shared = [json.loads(line) for line in result.stdout.splitlines()]
    assert shared
    assert all(set(r) <= {"first_name", "last_name", "city", "phone"} for r in shared)
    assert "40 read" in result.stderr
    assert "withheld" in result.stderr
    assert "consent:local_organizing" in result.stderr


def test_preview_files_without_a_config(runner: CliRunner, policies: Path, tmp_path: Path) -> None:
    policy = str(policies / "organizers-north.yaml")
    people = tmp_path / "people.jsonl"
    people.write_text(
        '{"id": "1", "first_name": "Ana", "region": "North", "street_address": "1 Mill Lane",'
        ' "consent": {"local_organizing": true}}\n'
        '{"id": "2", "first_name": "Bo", "region": "North", "consent": {}}\n'
    )
    result = run(
        runner, "policy", "preview", policy, "--input", str(people), "--json", cwd=tmp_path
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["first_name"] for line in result.stdout.splitlines()] == ["Ana"]
    assert "street_address" not in result.stdout
    assert "withheld 1: consent:local_organizing" in result.stderr
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("id,first_name,region\n1,Ana,North\n")
    result = run(runner, "policy", "preview", policy, "--input", str(csv_file), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "1 read, 0 shared, 1 withheld" in result.stderr


def test_a_named_config_must_exist(runner: CliRunner, policies: Path, tmp_path: Path) -> None:
    result = run(
        runner,
        "--config",
        str(tmp_path / "missing.yaml"),
        "policy",
        "check",
        str(policies / "organizers-north.yaml"),
        cwd=tmp_path,
    )
    assert result.exit_code == 3


def test_hash_needs_the_network_key(runner: CliRunner, demo: Path, policies: Path) -> None:
    result = run(
        runner,
        "policy",
        "preview",
        str(policies / "partner-housing.yaml"),
        "--input",
        "members",
        cwd=demo,
    )
    assert result.exit_code == 3
    assert "CONNECTOR_DEMO_HASH_KEY" in result.stderr


def test_schema_policy(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "schema", "policy", cwd=demo)
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "require_consent" in schema["properties"]
    assert "last4" in json.dumps(schema)


def test_a_record_a_mask_refuses_is_counted_and_the_others_are_shown(
    runner: CliRunner, tmp_path: Path
) -> None:
    """As a run fails that one record: a latitude no float holds makes coarsen_location
    fail; the preview goes on, counts it as failed and never shows its value."""
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "policy: p\nrequire_consent: [contact_me]\nrules:\n  - allow: everyone\n"
        "fields:\n  first_name: show\n  latitude: {coarsen_location: 2}\n"
    )
    huge = "1" + "0" * 400
    people = tmp_path / "people.jsonl"
    yes = '"consent": {"contact_me": true}'
    people.write_text(
        f'{{"id": "A", "first_name": "Ana", "latitude": 53.81234, {yes}}}\n'
        f'{{"id": "B", "first_name": "Bo", "latitude": {huge}, {yes}}}\n'
        f'{{"id": "C", "first_name": "Cy", "latitude": 54.1, {yes}}}\n'
    )
    result = run(runner, "policy", "preview", str(policy), "--input", str(people), "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["first_name"] for line in result.stdout.splitlines()] == ["Ana", "Cy"]
    assert "3 read, 2 shared, 0 withheld" in result.stderr
    assert "failed 1: policy p: the coarsen_location mask failed on field latitude" in result.stderr
    assert huge not in result.output
