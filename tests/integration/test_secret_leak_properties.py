"""Property: whatever characters a secret holds and however a server echoes it, no form of it
reaches any output (stdout, stderr, ``--json``, the log) or any table of the state database.

A real loopback CiviCRM (the plugin's fake) answers the read with an error body that echoes the
request headers, the API key among them, in one of several encodings and at a varying offset
(so that the key may straddle the point where the client cuts the server's text). A key the
connector cannot send (whitespace at its ends, a control character, a letter outside Latin-1)
must be refused cleanly instead, still without showing it. Bounded for CI: few examples.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from click.testing import CliRunner
from connector_civicrm.testing import ECHO_ENCODINGS, Echo, FakeCiviCRM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.credentials import service_name
from connector_core.logs import JsonFormatter
from tests.integration.test_cli import run
from tests.integration.test_secret_doors import network
from tests.leaks import database_text, leaked, sqlite_url


def varied(secret: str) -> bool:
    """Whether every run of 8 characters of `secret` holds 5 different ones: a key such as
    ``AAA000000000`` would "leak" through any zero-filled hash (runs of 8 are scrubbed)."""
    return all(len(set(secret[i : i + 8])) >= 5 for i in range(len(secret) - 7))


AWKWARD = "'\"\\\n\t %+/=&<>:;@#?é€Ü中\u00a0"
SECRETS = st.builds(
    lambda head, tail: head + tail,
    st.text(string.ascii_letters, min_size=3, max_size=6),
    st.text(
        st.sampled_from(AWKWARD + string.ascii_letters + string.digits), min_size=9, max_size=26
    ),
).filter(varied)
ECHOES = st.builds(
    Echo,
    status=st.sampled_from([401, 500]),
    encoding=st.sampled_from(ECHO_ENCODINGS),
    prefix=st.integers(0, 260).map(lambda n: "p" * n),
    entity=st.just("Contact"),
    action=st.just("get"),
)
COMMANDS = (
    ("-v", "run", "to_sheet"),
    ("-v", "--log-format", "json", "run", "to_sheet", "--json"),
    ("plan", "to_sheet"),
    ("runs", "--json"),
    ("status", "--json"),
    ("-v", "doctor", "--json"),
    ("credentials", "list", "--json"),
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCiviCRM]:
    """One real loopback CiviCRM for every example."""
    with FakeCiviCRM(api_key="first-key", url_style="standalone") as server:
        yield server


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """A log file written by the connector's own JSON formatter, as a deployment would."""
    path = tmp_path / "connector.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("connector")
    logger.addHandler(handler)
    yield path
    logger.removeHandler(handler)
    handler.close()


def sendable(secret: str) -> bool:
    """Whether the connector can send `secret` in an HTTP header at all."""
    return secret == secret.strip() and secret.isprintable() and all(ord(c) < 256 for c in secret)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(secret=SECRETS, echo=ECHOES)
def test_no_form_of_a_secret_leaks_anywhere(
    secret: str,
    echo: Echo,
    fake: FakeCiviCRM,
    tmp_path_factory: pytest.TempPathFactory,
    log_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = network(tmp_path_factory.mktemp("net"), fake.base_url)
    fake.echo = None
    fake.add_api_key(secret)
    runner = CliRunner()
    if sendable(secret):
        stored = run(
            runner, "credentials", "set", "crm", "api_key", "--force", input=secret, cwd=folder
        )
        assert stored.exit_code == 0, stored.output
    else:  # another tool put it there; `credentials set` refuses such a value
        keyring.set_password(service_name("Echo network", "crm"), "api_key", secret)
    fake.echo = echo
    caplog.set_level(logging.DEBUG)
    texts = []
    for command in COMMANDS:
        result = run(runner, *command, cwd=folder)
        assert result.exit_code in (0, 1, 3, 4), (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), command
        texts += [result.stdout, result.stderr]
    if sendable(secret):
        assert "stopped:" in texts[1]  # the echo was read and reported
    else:
        assert "Traceback" not in "".join(texts)
    texts += [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    texts.append(log_file.read_text(encoding="utf-8"))
    tables = (
        database_text(sqlite_url(folder / "state.db")) if (folder / "state.db").exists() else []
    )
    assert leaked(secret, texts) == []
    assert leaked(secret, tables) == []
