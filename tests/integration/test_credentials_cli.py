"""`connector credentials` and the keyring: per-network entries, no silent overwrite, every
referenced secret listed, the environment standing in for a failing keyring, and the doctor's
warning about a keyring that stores secrets in clear text."""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from click.testing import CliRunner
from keyring.backends import fail

from connector_core.credentials import legacy_service_name, service_name
from tests.integration.test_cli import run

CONFIG = """\
version: 1
network:
  name: %(name)s
  hash_key: {secret: hash_key}
connections:
  members: {adapter: csv, settings: {path: members.csv}}
"""


def network(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "connector.yaml").write_text(CONFIG % {"name": name}, encoding="utf-8")
    return folder


def listed(runner: CliRunner, folder: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    result = run(runner, "credentials", "list", "--json", cwd=folder, env=env)
    assert result.exit_code == 0, result.output
    return {
        f"{r['connection']}.{r['setting']}": f"{r['source']}: {r['status']}"
        for r in json.loads(result.stdout)
    }


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    return network(tmp_path / "a", "Network A"), network(tmp_path / "b", "Network B")


def test_two_networks_on_one_account_never_share_a_secret(
    runner: CliRunner, two: tuple[Path, Path]
) -> None:
    a, b = two
    stored = run(runner, "credentials", "set", "network", "hash_key", input="hash-key-of-a", cwd=a)
    assert stored.exit_code == 0, stored.output
    assert keyring.get_password(service_name("Network A", "network"), "hash_key") == "hash-key-of-a"
    assert listed(runner, a)["network.hash_key"] == "keyring hash_key: set"
    assert listed(runner, b)["network.hash_key"] == "keyring hash_key: missing"
    doctor = run(runner, "doctor", cwd=b)
    assert "FAIL network hash_key" in doctor.stdout


def test_list_shows_every_network_secret(runner: CliRunner, two: tuple[Path, Path]) -> None:
    a, _ = two
    rows = listed(runner, a)
    assert set(rows) == {"network.hash_key", "network.ledger_key"}


def test_set_refuses_to_overwrite_without_force(runner: CliRunner, two: tuple[Path, Path]) -> None:
    a, _ = two
    assert (
        run(
            runner, "credentials", "set", "network", "hash_key", input="first-value-of-it", cwd=a
        ).exit_code
        == 0
    )
    again = run(
        runner, "credentials", "set", "network", "hash_key", input="second-value-of-it", cwd=a
    )
    assert again.exit_code == 3
    assert "already holds hash_key for network" in again.stderr
    assert "--force" in again.stderr
    service = service_name("Network A", "network")
    assert keyring.get_password(service, "hash_key") == "first-value-of-it"
    forced = run(
        runner,
        "credentials",
        "set",
        "network",
        "hash_key",
        "--force",
        input="second-value-of-it",
        cwd=a,
    )
    assert forced.exit_code == 0, forced.output
    assert keyring.get_password(service, "hash_key") == "second-value-of-it"


def test_set_refuses_an_unknown_connection(runner: CliRunner, two: tuple[Path, Path]) -> None:
    a, _ = two
    result = run(runner, "credentials", "set", "member", "api_key", input="some-value", cwd=a)
    assert result.exit_code == 3
    assert "did you mean 'members'?" in result.stderr


def test_an_entry_of_before_namespacing_is_read_with_a_warning_until_migrated(
    runner: CliRunner, two: tuple[Path, Path]
) -> None:
    a, _ = two
    keyring.set_password(legacy_service_name("network"), "hash_key", "old-shared-hash-key")
    assert listed(runner, a)["network.hash_key"] == (
        "keyring hash_key (old shared entry): set (run `connector credentials migrate`)"
    )
    doctor = run(runner, "doctor", cwd=a)
    assert "ok   network hash_key: found" in doctor.stdout
    assert "before network namespacing" in doctor.stderr
    assert "connector credentials migrate" in doctor.stderr
    migrated = run(runner, "credentials", "migrate", cwd=a)
    assert migrated.exit_code == 0, migrated.output
    assert "copied network hash_key" in migrated.stderr
    assert keyring.get_password(service_name("Network A", "network"), "hash_key") == (
        "old-shared-hash-key"
    )
    assert keyring.get_password(legacy_service_name("network"), "hash_key") is not None  # kept
    assert listed(runner, a)["network.hash_key"] == "keyring hash_key: set"
    removed = run(runner, "credentials", "migrate", "--remove-old", cwd=a)
    assert removed.exit_code == 0, removed.output
    assert keyring.get_password(legacy_service_name("network"), "hash_key") is None


def test_a_fresh_ledger_never_takes_another_networks_old_ledger_key(
    runner: CliRunner, two: tuple[Path, Path]
) -> None:
    a, _ = two
    keyring.set_password(legacy_service_name("network"), "ledger_key", "another-networks-key")
    result = run(runner, "run", "--all", cwd=a)
    assert result.exit_code == 0, result.output
    assert "generated a ledger key" in result.stderr
    own = keyring.get_password(service_name("Network A", "network"), "ledger_key")
    assert own is not None
    assert own != "another-networks-key"


@pytest.fixture
def failing_keyring() -> Iterator[None]:
    """A keyring backend that raises on every call (keyring's own `fail` backend)."""
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)


@pytest.mark.usefixtures("failing_keyring")
def test_the_environment_stands_in_for_a_failing_keyring(
    runner: CliRunner, two: tuple[Path, Path]
) -> None:
    a, _ = two
    env = {"CONNECTOR_SECRET_NETWORK_HASH_KEY": "hash-key-from-the-environment"}
    rows = listed(runner, a, env)
    assert rows["network.hash_key"] == "env CONNECTOR_SECRET_NETWORK_HASH_KEY: set"
    doctor = run(runner, "doctor", cwd=a, env=env)
    assert "ok   network hash_key: found" in doctor.stdout
    missing = run(runner, "doctor", cwd=a)
    assert "FAIL network hash_key" in missing.stdout
    assert "no keyring backend" in missing.stdout
    assert "CONNECTOR_SECRET_NETWORK_HASH_KEY" in missing.stdout
    assert "Traceback" not in missing.output


def test_doctor_warns_that_a_plaintext_keyring_stores_secrets_in_clear(
    runner: CliRunner, two: tuple[Path, Path]
) -> None:
    a, _ = two
    result = run(runner, "doctor", "--json", cwd=a)
    finding = next(f for f in json.loads(result.stdout) if f["subject"] == "keyring")
    assert finding["warning"]
    assert finding["ok"]
    assert "PlaintextKeyring" in finding["message"]
    assert "CLEAR TEXT" in finding["message"]


@pytest.mark.usefixtures("failing_keyring")
def test_doctor_says_nothing_of_a_keyring_that_is_not_plaintext(
    runner: CliRunner, two: tuple[Path, Path]
) -> None:
    a, _ = two
    result = run(runner, "doctor", "--json", cwd=a)
    assert all(f["subject"] != "keyring" for f in json.loads(result.stdout))


def test_a_connection_cannot_be_called_network(runner: CliRunner, tmp_path: Path) -> None:
    folder = network(tmp_path, "N")
    config = folder / "connector.yaml"
    config.write_text(config.read_text().replace("  members:", "  network:"), encoding="utf-8")
    result = run(runner, "doctor", cwd=folder)
    assert result.exit_code == 3
    assert f"{config}:6:" in result.stdout
    assert "cannot be called 'network'" in result.stdout


def _in_a_terminal(folder: Path, args: list[str], answers: list[tuple[str, str]]) -> str:
    """Run the console script in a real pseudo-terminal, answering each prompt; its output."""
    connector = Path(sys.executable).parent / "connector"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling terminal, as an admin's shell
        os.chdir(folder)
        os.execv(str(connector), [str(connector), *args])
    seen = ""
    try:
        for prompt, answer in answers:
            deadline = time.monotonic() + 20
            while prompt not in seen and time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if ready:
                    seen += os.read(fd, 1024).decode(errors="replace")
            assert prompt in seen, seen
            os.write(fd, answer.encode() + b"\r")
        while select.select([fd], [], [], 20)[0]:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    return seen


def test_set_in_a_terminal_asks_before_replacing(two: tuple[Path, Path]) -> None:
    a, _ = two
    service = service_name("Network A", "network")
    keyring.set_password(service, "hash_key", "the-first-hash-key")
    declined = _in_a_terminal(
        a, ["credentials", "set", "network", "hash_key"], [("replace it?", "n")]
    )
    assert "Aborted" in declined
    assert keyring.get_password(service, "hash_key") == "the-first-hash-key"
    replaced = _in_a_terminal(
        a,
        ["credentials", "set", "network", "hash_key"],
        [
            ("replace it?", "y"),
            ("hash_key for network:", "the-second-hash-key"),
            ("Repeat for confirmation:", "the-second-hash-key"),
        ],
    )
    assert "stored hash_key for network" in replaced
    assert "the-second-hash-key" not in replaced  # the prompt hides it
    assert keyring.get_password(service, "hash_key") == "the-second-hash-key"


SHORT = "demo-k3y"


def test_set_refuses_a_short_secret_without_showing_it(runner: CliRunner, tmp_path: Path) -> None:
    folder = network(tmp_path / "a", "Network A")
    refused = run(runner, "credentials", "set", "network", "hash_key", input=SHORT, cwd=folder)
    assert refused.exit_code == 3, refused.output
    assert "'hash_key'" in refused.stderr
    assert "shorter than 12 characters" in refused.stderr
    assert "openssl rand" in refused.stderr
    assert SHORT not in refused.output
    assert keyring.get_password(service_name("Network A", "network"), "hash_key") is None


@pytest.mark.parametrize("where", ["keyring", "env"])
def test_a_short_secret_is_refused_when_read(runner: CliRunner, tmp_path: Path, where: str) -> None:
    folder = network(tmp_path / "a", "Network A")
    (folder / "members.csv").write_text("member_id,email,consent\n", encoding="utf-8")
    env = {}
    if where == "keyring":
        keyring.set_password(service_name("Network A", "network"), "hash_key", SHORT)
    else:
        env = {"CONNECTOR_SECRET_NETWORK_HASH_KEY": SHORT}
    result = run(runner, "doctor", cwd=folder, env=env)
    assert result.exit_code == 3, result.output
    assert "hash_key" in result.output
    assert "shorter than 12 characters" in result.output
    assert SHORT not in result.output


TWO_FOR_ONE_VARIABLE = """\
version: 1
network: {name: Clash}
connections:
  crm:
    adapter: civicrm
    settings: {url: "https://crm.example.org", api_key: {secret: api_key}}
  crm-api:
    adapter: civicrm
    settings: {url: "https://crm2.example.org", api_key: {secret: key}}
"""


def test_two_secrets_read_from_one_variable_are_refused(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "connector.yaml").write_text(TWO_FOR_ONE_VARIABLE, encoding="utf-8")
    result = run(runner, "credentials", "list", cwd=tmp_path)
    assert result.exit_code == 3, result.output
    assert "connector.yaml:9" in result.stderr
    assert "connector.yaml:6" in result.stderr
    assert "CONNECTOR_SECRET_CRM_API_KEY" in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "//alice:S3cr3t-pw@cloud.example.org/",
        "cloud.example.org/?password=S3cr3t-pw",
        "cloud.example.org/?a&api_token=S3cr3t#x",
        "//:S3cr3t-pw@cloud.example.org",
    ],
)
def test_a_refused_url_is_never_echoed_with_its_credentials(
    runner: CliRunner, tmp_path: Path, url: str
) -> None:
    (tmp_path / "connector.yaml").write_text(
        "version: 1\nnetwork: {name: U}\nconnections:\n  crm:\n    adapter: civicrm\n"
        f'    settings: {{url: "{url}", api_key: {{secret: api_key}}}}\n',
        encoding="utf-8",
    )
    result = run(runner, "credentials", "list", cwd=tmp_path)
    assert result.exit_code == 3, result.output
    assert "connector.yaml:6" in result.stderr
    assert "cloud.example.org" in result.stderr  # the rest of the input still helps
    assert "S3cr3t" not in result.output


def test_a_url_with_a_password_in_its_query_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "connector.yaml").write_text(
        "version: 1\nnetwork: {name: U}\nconnections:\n  crm:\n    adapter: civicrm\n"
        '    settings: {url: "https://crm.example.org/?password=S3cr3t-pw", '
        "api_key: {secret: api_key}}\n",
        encoding="utf-8",
    )
    result = run(runner, "credentials", "list", cwd=tmp_path)
    assert result.exit_code == 3, result.output
    assert "connector.yaml:6" in result.stderr
    assert "'https://crm.example.org/'" in result.stderr
    assert "S3cr3t" not in result.output


def test_list_says_the_keyring_shadows_a_variable_set_too(
    runner: CliRunner, two: tuple[Path, Path]
) -> None:
    a, _ = two
    keyring.set_password(service_name("Network A", "network"), "hash_key", "hash-key-in-keyring")
    env = {"CONNECTOR_SECRET_NETWORK_HASH_KEY": "hash-key-in-the-env"}
    rows = listed(runner, a, env)
    assert rows["network.hash_key"] == (
        "keyring hash_key: set "
        "(CONNECTOR_SECRET_NETWORK_HASH_KEY is set too and not used: the keyring comes first)"
    )
