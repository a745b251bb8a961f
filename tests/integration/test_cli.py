"""The `connector` command end to end, in process, on the demo network and broken copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector_core.cli import build_cli


def run(
    runner: CliRunner,
    *args: str,
    input: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """Invoke `connector ARGS` as the console script would (plugins loaded from argv)."""
    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(
            build_cli(args), list(args), input=input, env=env, prog_name="connector"
        )
    finally:
        os.chdir(previous)


def test_version(runner: CliRunner) -> None:
    result = run(runner, "--version")
    assert result.exit_code == 0
    assert result.output.startswith("connector, version ")


def test_adapters_json_lists_csv(runner: CliRunner) -> None:
    result = run(runner, "adapters", "--json")
    assert result.exit_code == 0, result.output
    names = [a["name"] for a in json.loads(result.stdout)]
    assert names == sorted(names)
    assert {"csv", "civicrm", "nextcloud", "nextcloud_files"} <= set(names)


DEMO_ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}


def test_doctor_on_the_demo_passes(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "doctor", cwd=demo, env=DEMO_ENV)
    assert result.exit_code == 0, result.output
    assert "ok   connection members: csv: reachable" in result.stdout
    assert "ok   network hash_key: found" in result.stdout
    assert (
        "ok   job organizers-north: source members: 40 record(s); policy organizers-north; "
        "fields match" in result.stdout
    )
    assert "ok   job partner-housing: source members: 40 record(s)" in result.stdout
    assert "all checks passed" in result.stderr


def test_doctor_warns_of_floor_rules_a_source_cannot_apply(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "doctor", cwd=demo, env=DEMO_ENV)
    assert "warn job organizers-north: " in result.stdout
    assert "forbid rule 'deceased' tests is_deceased" in result.stdout
    assert "withholds nobody read from it" in result.stdout


def test_doctor_checks_the_hash_key_every_job_needs(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "doctor", cwd=demo)
    assert result.exit_code == 3, result.output
    assert "FAIL network hash_key: " in result.stdout
    assert "FAIL job partner-housing: " in result.stdout  # its policy hashes emails
    assert "CONNECTOR_DEMO_HASH_KEY" in result.stdout


def test_doctor_json(runner: CliRunner, demo: Path) -> None:
    args = ("--config", str(demo / "connector.yaml"), "doctor", "--json")
    result = run(runner, *args, env=DEMO_ENV)
    findings = json.loads(result.stdout)
    assert all(f["ok"] for f in findings)
    assert {f["subject"] for f in findings} >= {"config", "plugins", "connection members"}


def test_doctor_reports_config_errors_with_locations(runner: CliRunner, demo: Path) -> None:
    config = demo / "connector.yaml"
    config.write_text(
        config.read_text().replace(
            "    adapter: csv\n    description: The", "    adapter: cvs\n    description: The"
        )
    )
    result = run(runner, "doctor", cwd=demo)
    assert result.exit_code == 3
    assert (
        f"FAIL config: {config}:24:14: connections.members.adapter: "
        "unknown adapter 'cvs'; did you mean 'csv'?" in result.stdout
    )
    assert "Traceback" not in result.output


def test_doctor_reports_an_unreadable_source(runner: CliRunner, demo: Path) -> None:
    (demo / "data" / "members.csv").write_text("Contact ID,City,City\nM1,Leeds,York\n")
    result = run(runner, "doctor", cwd=demo, env=DEMO_ENV)
    assert result.exit_code == 4
    assert "FAIL connection members:" in result.stdout
    assert "members.csv" in result.stdout
    assert "hint:" in result.stdout


def test_missing_config_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    result = run(runner, "read", "members", cwd=tmp_path)
    assert result.exit_code == 3
    assert "connector.yaml" in result.stderr
    assert "Hint:" in result.stderr
    assert "Traceback" not in result.output


def test_config_from_environment(runner: CliRunner, demo: Path, tmp_path: Path) -> None:
    result = run(
        runner,
        "read",
        "members",
        "--limit",
        "2",
        "--json",
        cwd=tmp_path,
        env={"CONNECTOR_CONFIG": str(demo / "connector.yaml")},
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["M0001", "M0002"]
    assert records[0]["consent"]["local_organizing"]["granted"] is True


def test_read_table(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "read", "members", "--limit", "1", "--fields", "id,city,consent", cwd=demo)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["id", "city", "consent"]
    assert row.startswith("M0001  Bristol  contact_me:no local_organizing:yes")


def test_unknown_connection_suggests(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "read", "member", cwd=demo)
    assert result.exit_code == 3
    assert "did you mean 'members'?" in result.stderr


def test_usage_errors_exit_2(runner: CliRunner) -> None:
    assert run(runner, "read").exit_code == 2
    assert run(runner, "no-such-command").exit_code == 2


def test_schema_config_to_file(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "schema", "config", "-o", "connector.schema.json", cwd=demo)
    assert result.exit_code == 0, result.output
    schema = json.loads((demo / "connector.schema.json").read_text())
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "csv" in json.dumps(schema)


def test_credentials_round_trip(runner: CliRunner, demo: Path) -> None:
    result = run(
        runner, "credentials", "set", "members", "api_key", input="s3cr3t-value\n", cwd=demo
    )
    assert result.exit_code == 0, result.output
    assert "s3cr3t-value" not in result.output
    import keyring

    service = "commons-connector:Demo Climate Network:members"
    assert keyring.get_password(service, "api_key") == "s3cr3t-value"
    assert run(runner, "credentials", "delete", "members", "api_key", cwd=demo).exit_code == 0
    again = run(runner, "credentials", "delete", "members", "api_key", cwd=demo)
    assert again.exit_code == 3
    assert "holds no api_key for members" in again.stderr


def test_credentials_refuse_empty_and_bad_keys(runner: CliRunner, demo: Path) -> None:
    assert run(runner, "credentials", "set", "members", "k", input="", cwd=demo).exit_code == 3
    bad = run(runner, "credentials", "set", "members", "bad key!", input="x", cwd=demo)
    assert bad.exit_code == 3
    assert "not a valid secret key name" in bad.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_verbose_logging_formats(runner: CliRunner, demo: Path, fmt: str) -> None:
    result = run(runner, "-v", "--log-format", fmt, "doctor", cwd=demo, env=DEMO_ENV)
    assert result.exit_code == 0, result.output


NOT_UTF8_CONFIG = """\
version: 1
network: {name: Old drive}
consent:
  purposes:
    contact_me: {description: May contact me}
connections:
  src: {adapter: csv, settings: {path: people.csv}, mapping: {consent.contact_me: contact_me}}
  out: {adapter: csv, settings: {path: out/people.csv}}
jobs:
  j: {source: src, target: out, policy: p.yaml}
"""


def test_a_network_in_a_folder_whose_name_is_not_utf8_runs(tmp_path: Path) -> None:
    """A folder name with undecodable bytes (an old drive's latin-1 name) reaches paths,
    the SQLite store's URL, config hashes and the output as lone surrogates: the network
    runs, and the console script prints the name escaped whatever the locale (a UTF-8
    locale's stdout is strict: simulated by PYTHONIOENCODING)."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    (folder / "out").mkdir(parents=True)
    (folder / "connector.yaml").write_text(NOT_UTF8_CONFIG, encoding="utf-8")
    (folder / "p.yaml").write_text(
        "policy: p\nrequire_consent: [contact_me]\nrules:\n  - allow: all\n"
        "fields:\n  first_name: show\n",
        encoding="utf-8",
    )
    (folder / "people.csv").write_text("id,first_name,contact_me\n1,Ann,yes\n2,Bob,no\n")
    env = {
        **os.environ,
        "PYTHONIOENCODING": "utf-8:strict",
        "CONNECTOR_SECRET_NETWORK_LEDGER_KEY": "a ledger key for an old drive's network",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }

    def connector(*args: str) -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, "-m", "connector_core", "--config", str(folder / "connector.yaml")]
        done = subprocess.run([*argv, *args], capture_output=True, env=env, check=False)
        assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
        return done

    assert b"created 1" in connector("run", "j").stdout
    assert b"created 0" in connector("run", "j").stdout
    assert (folder / "out" / "people.csv").read_text().count("Ann") == 1
    checked = connector("policy", "check", str(folder / "p.yaml"))
    assert checked.returncode == 0
    assert b"caf\\udce9" in checked.stdout
