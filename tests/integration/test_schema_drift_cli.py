"""Schema drift stops `connector run` (exit 3) before anything is written (issue #10, 1).

Each case first ran to exit 0 and deleted or blanked people at the recipient.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from connector_civicrm.testing import FakeCiviCRM

from tests.integration.test_cli import run
from tests.integration.test_sync_cli import ENV, rows

JOB = "organizers-north"


def first_run(runner: CliRunner, demo: Path) -> list[dict[str, str]]:
    result = run(runner, "run", JOB, cwd=demo, env=ENV)
    assert result.exit_code == 0, result.output
    shared = rows(demo / "out" / f"{JOB}.csv")
    assert len(shared) == 7
    return shared


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def assert_refused(runner: CliRunner, demo: Path, before: list[dict[str, str]]) -> Result:
    """The run exits 3 with no traceback and leaves the target and the state as they were."""
    history = json.loads(run(runner, "runs", "--json", cwd=demo).stdout)
    result = run(runner, "run", JOB, cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert "Nothing was written" in result.stderr
    assert rows(demo / "out" / f"{JOB}.csv") == before
    assert json.loads(run(runner, "runs", "--json", cwd=demo).stdout) == history
    return result


def test_an_empty_source_file_is_refused(runner: CliRunner, demo: Path) -> None:
    before = first_run(runner, demo)
    (demo / "data" / "members.csv").write_bytes(b"")
    result = assert_refused(runner, demo, before)
    config = demo / "connector.yaml"
    assert f"{config}:{line_of(config, 'key_column: Contact ID')}:" in result.stderr
    assert "the file is empty: no header, no columns" in result.stderr
    assert "it lists no names" in result.stderr


def test_a_renamed_consent_column_is_refused(runner: CliRunner, demo: Path) -> None:
    before = first_run(runner, demo)
    edit(demo / "data" / "members.csv", "Local organizing OK", "Local Organizing OK")
    result = assert_refused(runner, demo, before)
    config = demo / "connector.yaml"
    where = f"{config}:{line_of(config, 'consent.local_organizing:')}:"
    assert where in result.stderr
    assert "connections.members.mapping.consent.local_organizing: 'Local organizing OK'" in (
        result.stderr
    )
    assert "did you mean 'Local Organizing OK'?" in result.stderr
    assert "'Contact ID', 'First Name'" in result.stderr  # the columns that exist
    assert "Fix:" in result.stderr


def test_a_mapping_to_a_missing_column_is_refused(runner: CliRunner, demo: Path) -> None:
    before = first_run(runner, demo)
    config = demo / "connector.yaml"
    edit(config, "phone: Phone\n", "phone: Phone number\n")
    result = assert_refused(runner, demo, before)
    assert f"{config}:{line_of(config, 'phone: Phone number')}:" in result.stderr
    assert "'Phone number' is not in the header of" in result.stderr
    assert "did you mean 'Phone'?" in result.stderr
    assert "+44" not in result.output  # column names, never values


def test_a_rule_on_a_field_the_source_lacks_is_refused(runner: CliRunner, demo: Path) -> None:
    before = first_run(runner, demo)
    policy = demo / ".." / ".." / "policies" / "organizers-north.yaml"
    edit(policy, "when: {region: North}", "when: {tags: {any_of: [north]}}")
    result = assert_refused(runner, demo, before)
    assert f"{policy}:{line_of(policy, 'allow: supporters')}:" in result.stderr
    assert "allow rule 'supporters in the North' tests tags" in result.stderr
    assert "connection 'members' does not provide" in result.stderr
    assert "connections.members.mapping (tags: <name>)" in result.stderr


def test_a_policy_showing_a_field_the_source_lacks_is_refused(
    runner: CliRunner, demo: Path
) -> None:
    before = first_run(runner, demo)
    policy = demo / ".." / ".." / "policies" / "organizers-north.yaml"
    edit(policy, "  city: show\n", "  city: show\n  organization: show\n")
    result = assert_refused(runner, demo, before)
    assert f"{policy}:{line_of(policy, 'organization: show')}:" in result.stderr
    assert "shows organization" in result.stderr


def test_a_required_purpose_without_evidence_is_refused(runner: CliRunner, demo: Path) -> None:
    before = first_run(runner, demo)
    config = demo / "connector.yaml"
    edit(config, "      consent.local_organizing: Local organizing OK\n", "")
    result = assert_refused(runner, demo, before)
    policy = demo / ".." / ".." / "policies" / "organizers-north.yaml"
    assert f"{policy}:{line_of(policy, 'require_consent')}:" in result.stderr
    assert "requires consent 'local_organizing'" in result.stderr
    assert "docs/adapters/csv.md" in result.stderr


@pytest.mark.parametrize("command", ["plan", "run --dry-run"])
def test_plan_and_dry_run_refuse_too(runner: CliRunner, demo: Path, command: str) -> None:
    (demo / "data" / "members.csv").write_bytes(b"")
    result = run(runner, *command.split(), JOB, cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "no header, no columns" in result.stderr


def test_doctor_reports_the_drift_a_run_would_refuse(runner: CliRunner, demo: Path) -> None:
    edit(demo / "data" / "members.csv", "Local organizing OK", "Local Organizing OK")
    result = run(runner, "doctor", cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    config = demo / "connector.yaml"
    where = f"{config}:{line_of(config, 'consent.local_organizing:')}:"
    for job in ("organizers-north", "partner-housing"):
        assert f"FAIL job {job}: {where}" in result.stdout
    assert "did you mean 'Local Organizing OK'?" in result.stdout
    assert "`connector run` refuses this job" in result.stdout
    assert "Traceback" not in result.output


def test_doctor_shows_an_emptied_source(runner: CliRunner, demo: Path) -> None:
    members = demo / "data" / "members.csv"
    members.write_text(members.read_text().splitlines()[0] + "\n")  # the header only
    result = run(runner, "doctor", cwd=demo, env=ENV)
    assert "ok   job organizers-north: source members: 0 record(s)" in result.stdout


def test_policy_check_against_a_connection(runner: CliRunner, demo: Path) -> None:
    policies = demo / ".." / ".." / "policies"
    north, public = policies / "organizers-north.yaml", policies / "public-map.yaml"
    ok = run(runner, "policy", "check", str(north), "--against", "members", cwd=demo)
    assert ok.exit_code == 0, ok.output
    assert "policy organizers-north, 2 rule(s); members: fields match" in ok.stdout
    assert "warning: " in ok.stderr  # the floor's rule on is_deceased
    assert "tests is_deceased" in ok.stderr

    args = ("policy", "check", str(north), str(public), "--against", "members")
    result = run(runner, *args, cwd=demo)
    assert result.exit_code == 3, result.output
    assert f"error: {public}:{line_of(public, 'allow: located supporters')}:" in result.stderr
    assert "allow rule 'located supporters' tests latitude" in result.stderr
    assert "connection 'members' does not provide" in result.stderr
    assert "1 of 2 policy file(s) have errors" in result.stderr


def test_policy_check_against_an_unknown_connection(runner: CliRunner, demo: Path) -> None:
    north = demo / ".." / ".." / "policies" / "organizers-north.yaml"
    result = run(runner, "policy", "check", str(north), "--against", "member", cwd=demo)
    assert result.exit_code == 3
    assert "did you mean 'members'?" in result.stderr


CIVICRM_NETWORK = """\
version: 1
network: {name: CiviCRM drift}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm:
    adapter: civicrm
    settings:
      url: %(url)s
      api_key: {env: DRIFT_CIVI_KEY}
      consent:
        local_organizing: {group: Local organizing}
    mapping: {region: "address_primary.country_id:abbr"}
  sheet: {adapter: csv, settings: {path: sheet.csv}}
jobs:
  to_sheet: {source: crm, target: sheet, policy: local.yaml}
"""
CIVICRM_POLICY = """\
policy: local
require_consent: [local_organizing]
rules:
  - allow: everyone
fields:
  first_name: show
"""


def test_civicrm_doctor_counts_and_run_refuses_a_retitled_consent_group(
    runner: CliRunner, tmp_path: Path, fake_civicrm: FakeCiviCRM
) -> None:
    group = fake_civicrm.add_group("local", title="Local organizing")
    for name in ("Ana", "Bo"):
        fake_civicrm.set_membership(
            fake_civicrm.add_contact(contact_type="Individual", first_name=name), group
        )
    (tmp_path / "connector.yaml").write_text(CIVICRM_NETWORK % {"url": fake_civicrm.base_url})
    (tmp_path / "local.yaml").write_text(CIVICRM_POLICY)
    env = {"DRIFT_CIVI_KEY": fake_civicrm.api_key}
    doctor = run(runner, "doctor", cwd=tmp_path, env=env)
    assert doctor.exit_code == 0, doctor.output
    assert "ok   job to_sheet: source crm: 2 record(s); policy local; fields match" in (
        doctor.stdout
    )
    first = run(runner, "run", "to_sheet", cwd=tmp_path, env=env)
    assert first.exit_code == 0, first.output
    assert len(rows(tmp_path / "sheet.csv")) == 2

    fake_civicrm.store.tables["Group"][group]["title"] = "Local organising"
    result = run(runner, "run", "to_sheet", cwd=tmp_path, env=env)
    assert result.exit_code == 3, result.output
    config = tmp_path / "connector.yaml"
    assert f"{config}:{line_of(config, 'local_organizing: {group')}:" in result.stderr
    assert "did you mean 'Local organising'?" in result.stderr
    assert len(rows(tmp_path / "sheet.csv")) == 2
    assert "Ana" not in result.output
