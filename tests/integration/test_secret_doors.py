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
    ],
    ids=["500-raw", "500-json", "401-raw", "401-repr", "401-url", "500-base64", "401-cut"],
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


def test_a_key_with_a_trailing_line_break_is_refused_cleanly(
    tmp_path: Path, fake_civicrm: FakeCiviCRM
) -> None:
    folder = network(tmp_path, fake_civicrm.base_url)
    runner = CliRunner()
    store_key(runner, folder, "placeholder")  # the keyring entry the CLI writes, then
    key = "a-key-with-a-line-break\n"  # another tool writes a key with a line break into it
    entry = next((s, k) for s, k in _entries() if k == "api_key")
    keyring.set_password(entry[0], entry[1], key)
    result = run(runner, "run", "to_sheet", cwd=folder)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "line break" in result.stderr or "whitespace" in result.stderr
    assert "connector credentials set crm api_key" in result.stderr
    assert leaked(key, [result.output]) == []


def _entries() -> list[tuple[str, str]]:
    """(service, key) of every entry in the test's file keyring."""
    backend = keyring.get_keyring()
    import configparser

    parser = configparser.RawConfigParser()
    parser.read(backend.file_path)  # type: ignore[attr-defined]
    from keyrings.alt.escape import unescape

    return [(unescape(s), unescape(k)) for s in parser.sections() for k in parser.options(s)]
