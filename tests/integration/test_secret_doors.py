"""Secrets a server reflects, or that arrive malformed, never reach an output or the state.

A real loopback CiviCRM (the plugin's fake) is made to answer every call with an error body
that echoes the request headers, the API key included, as a misconfigured PHP debug page or a
proxy does; the run's `stopped:` line, `run --json`, the log and every table of the state
database must hold no form of the key.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keyring
import pytest
from click.testing import CliRunner
from connector_civicrm.testing import Echo, FakeCiviCRM

from connector_core.credentials import service_name
from tests.integration.test_cli import run
from tests.leaks import database_text, leaked, sqlite_url

NETWORK = """\
version: 1
network: {name: Echo network}
consent:
  purposes:
    contact_me: {description: You may contact me}
connections:
  crm:
    adapter: civicrm
    settings:
      url: %(url)s
      api_key: {secret: api_key}
      consent:
        contact_me: {field: is_opt_out}
  sheet: {adapter: csv, settings: {path: sheet.csv}}
jobs:
  to_sheet: {source: crm, target: sheet, policy: everyone.yaml}
"""
POLICY = """\
policy: everyone
require_consent: [contact_me]
rules:
  - allow: everyone
fields:
  first_name: show
"""
KEY = "Xk9'q\"z\\w%2B/=+ Ü-key"


def network(folder: Path, url: str) -> Path:
    """A CiviCRM → CSV network in `folder`."""
    (folder / "connector.yaml").write_text(NETWORK % {"url": url}, encoding="utf-8")
    (folder / "everyone.yaml").write_text(POLICY, encoding="utf-8")
    return folder


def store_key(runner: CliRunner, folder: Path, key: str) -> None:
    stored = run(runner, "credentials", "set", "crm", "api_key", input=key, cwd=folder)
    assert stored.exit_code == 0, stored.output


#: Puts the key across the 200 characters the client keeps of a 401 body.
ACROSS_THE_CUT = "p" * (200 - len("X-Civi-Auth: Bearer ") - 6)


@pytest.mark.parametrize(
    ("status", "encoding", "prefix"),
    [
        (500, "raw", ""),
        (500, "json", ""),
        (401, "raw", ""),
        (401, "repr", ""),
        (401, "url", ""),
        (500, "base64", ""),
        (401, "raw", ACROSS_THE_CUT),
        (500, "mime", "p" * 20),
        (500, "mime", ""),
        (500, "upper", ""),
        (401, "hex", ""),
        (500, "json_u", ""),
        (500, "shortened", ""),
    ],
    ids=[
        "500-raw",
        "500-json",
        "401-raw",
        "401-repr",
        "401-url",
        "500-base64",
        "401-cut",
        "500-mime-straddling",
        "500-mime",
        "500-upper",
        "401-hex",
        "500-json-u",
        "500-shortened",
    ],
)
def test_an_echoed_key_reaches_no_output_and_no_table(
    status: int,
    encoding: str,
    prefix: str,
    tmp_path: Path,
    fake_civicrm: FakeCiviCRM,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = network(tmp_path, fake_civicrm.base_url)
    runner = CliRunner()
    fake_civicrm.add_api_key(KEY)
    store_key(runner, folder, KEY)
    fake_civicrm.echo = Echo(status, encoding, prefix, entity="Contact", action="get")
    caplog.set_level(logging.DEBUG)
    text = run(runner, "-v", "run", "to_sheet", cwd=folder)
    as_json = run(runner, "run", "to_sheet", "--json", cwd=folder)
    listed = run(runner, "runs", "--json", cwd=folder)
    assert text.exit_code == as_json.exit_code == 4, text.output
    assert "stopped:" in text.stderr, text.stderr
    assert '"aborted":' in as_json.stdout
    outputs = [r.stdout + r.stderr for r in (text, as_json, listed)]
    outputs += [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    tables = database_text(sqlite_url(folder / "state.db"))
    assert any("aborted" in row for row in tables)
    assert leaked(KEY, outputs) == [], outputs
    assert leaked(KEY, tables) == []
    assert "Bearer " + KEY[:6] not in "\n".join(outputs + tables)  # not even a part


@pytest.mark.parametrize(
    "key", ["a-key-with-a-line-break\n", " a-key-after-a-space", "a-key\twith-a-tab"]
)
def test_a_key_with_whitespace_is_refused_cleanly(
    key: str, tmp_path: Path, fake_civicrm: FakeCiviCRM
) -> None:
    folder = network(tmp_path, fake_civicrm.base_url)
    # another tool wrote it (`connector credentials set` refuses such a value)
    keyring.set_password(service_name("Echo network", "crm"), "api_key", key)
    result = run(CliRunner(), "run", "to_sheet", cwd=folder)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert "the secret 'api_key' of connection 'crm'" in result.stderr
    assert "connector credentials set crm api_key" in result.stderr
    assert leaked(key, [result.output]) == []


def test_credentials_set_refuses_a_key_with_whitespace(tmp_path: Path) -> None:
    folder = network(tmp_path, "http://127.0.0.1:9")
    result = run(
        CliRunner(), "credentials", "set", "crm", "api_key", input=" padded-key\n", cwd=folder
    )
    assert result.exit_code == 3
    assert "starts or ends with whitespace" in result.stderr
    assert keyring.get_password(service_name("Echo network", "crm"), "api_key") is None


NEXTCLOUD_WITH_PASSWORD = """\
version: 1
network: {name: Url network}
connections:
  members: {adapter: csv, settings: {path: members.csv}}
  cloud:
    adapter: nextcloud
    settings:
      url: %(url)s
      address_book: organizers
jobs:
  to_cloud: {source: members, target: cloud, policy: everyone.yaml}
"""


@pytest.mark.parametrize(
    "url",
    [
        "http://organizer:app-Pass%2Fword-1@127.0.0.1:9",
        "https://only-a-token-4f9a@cloud.example.org/",
    ],
    ids=["user-and-password", "token-as-user"],
)
@pytest.mark.parametrize(
    "command", [["doctor"], ["-v", "run", "to_cloud"], ["credentials", "list"]]
)
def test_credentials_inside_a_url_are_refused_at_load(
    url: str, command: list[str], tmp_path: Path
) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(NEXTCLOUD_WITH_PASSWORD % {"url": url}, encoding="utf-8")
    (tmp_path / "everyone.yaml").write_text(POLICY.replace("require_consent: [contact_me]\n", ""))
    (tmp_path / "members.csv").write_text("id,first_name\n1,Ana\n", encoding="utf-8")
    result = run(CliRunner(), *command, cwd=tmp_path)
    assert result.exit_code == 3, result.output
    assert f"{config}:8:" in result.output  # file and line of the url
    assert "must not hold a user name or password" in result.output
    assert "{secret:" in result.output  # the fix
    secret = url.split("//")[1].split("@")[0].split(":")[-1]
    assert leaked(secret, [result.output]) == []
    assert not (tmp_path / "state.db").exists()
