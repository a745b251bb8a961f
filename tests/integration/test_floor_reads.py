"""The floor is a ceiling for reads too (issue 11, observation 3), through the public CLI.

A policy that narrows the floor may not read, with a mask or in a rule, a field the floor
does not let its recipient read: refused at load, naming both files, exit 3.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tests.integration.test_cli import run

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}


def _forbid_city_in_floor(demo: Path) -> Path:
    floor = demo.parent.parent / "policies" / "network-floor.yaml"
    floor.write_text(floor.read_text() + "  city: forbid\n")
    return floor


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _chapter(demo: Path, body: str) -> Path:
    """Point the organizers-north job at a chapter policy with `body` as its last lines."""
    policy = demo.parent.parent / "policies" / "organizers-north.yaml"
    policy.write_text(
        "policy: organizers-north\nrequire_consent: [local_organizing]\n" + body,
    )
    return policy


def test_a_mask_reading_a_floor_forbidden_field_is_refused(runner: CliRunner, demo: Path) -> None:
    floor = _forbid_city_in_floor(demo)
    policy = _chapter(
        demo,
        "rules:\n  - allow: everyone\nfields:\n  first_name: show\n  region: city_only\n",
    )
    check = run(runner, "policy", "check", str(policy), cwd=demo, env=ENV)
    assert check.exit_code == 3, check.output
    line = next(x for x in check.stderr.splitlines() if "city_only" in x)
    assert f"{policy}:7:" in line, check.stderr
    assert f"{floor.name}:{_line_of(floor, 'city: forbid')} forbids (city: forbid)" in line
    assert "Traceback" not in check.output

    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert not (demo / "out" / "organizers-north.csv").exists()


def test_a_rule_testing_a_floor_forbidden_field_is_refused(runner: CliRunner, demo: Path) -> None:
    floor = demo.parent.parent / "policies" / "network-floor.yaml"  # forbids street_address
    policy = _chapter(
        demo,
        "rules:\n  - allow: one street\n    when:\n      street_address: {starts_with: '1 Mill'}\n"
        "fields:\n  first_name: show\n",
    )
    check = run(runner, "policy", "check", str(policy), cwd=demo, env=ENV)
    assert check.exit_code == 3, check.output
    line = next(x for x in check.stderr.splitlines() if "street_address" in x)
    assert f"{policy}:6:" in line, check.stderr
    assert f"{floor.name}:{_line_of(floor, 'street_address: forbid')} forbids" in line
    assert "Traceback" not in check.output

    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert not (demo / "out" / "organizers-north.csv").exists()


def test_the_example_policies_still_load_and_run(runner: CliRunner, demo: Path) -> None:
    policies = demo.parent.parent / "policies"
    check = run(runner, "policy", "check", *map(str, sorted(policies.glob("*[!t].yaml"))), cwd=demo)
    assert check.exit_code == 0, check.output
    result = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert result.exit_code == 0, result.output
