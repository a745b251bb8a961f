"""Shared fixtures: a real file keyring in a temp dir, the CLI runner, the demo folder."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from keyrings.alt.file import PlaintextKeyring

from connector_core import scrub
from tests.postgres import PG_SERVER, _admin

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo"


@pytest.fixture(autouse=True)
def file_keyring(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PlaintextKeyring]:
    """A real keyring backend (a file) per test, also for subprocesses via the environment."""
    root = tmp_path_factory.mktemp("keyring")
    monkeypatch.setenv("XDG_DATA_HOME", str(root))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    backend = PlaintextKeyring()
    backend.file_path = str(root / "python_keyring" / "keyring_pass.cfg")
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(autouse=True)
def fresh_scrubber() -> Iterator[None]:
    """Each test starts with a scrubber that knows no secret (a random secret one test
    remembered must not scrub another test's expected output)."""
    scrub.forget_all()
    yield
    scrub.forget_all()


@pytest.fixture
def runner() -> CliRunner:
    """A click runner that keeps stderr apart from stdout."""
    return CliRunner()


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A private copy of the demo network (and the policies it uses, at the same place)."""
    target = tmp_path / "examples" / "demo"
    shutil.copytree(
        DEMO, target, ignore=shutil.ignore_patterns("*.db", "*.db.locks", "out", "anchors.log")
    )
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    (target / "out").mkdir()
    return target


@pytest.fixture(scope="session")
def soffice() -> str:
    """LibreOffice's ``soffice``, to open generated files as a recipient would.

    Missing, the test is skipped on a developer's machine and fails in CI (CI=true), which
    installs Debian's libreoffice-calc with scripts/services.
    """
    found = shutil.which("soffice")
    if found is None:
        reason = "LibreOffice (soffice) is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install libreoffice-calc (scripts/services)")
        pytest.skip(f"{reason}; apt-get install --no-install-recommends libreoffice-calc")
    return found


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of a database created for this test session (dropped at its end)."""
    server = _admin("postgres")
    try:
        with server.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {server.url} ({str(exc.orig).splitlines()[0]})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the state tests on it (scripts/services)")
        pytest.skip(f"{reason}; start it with scripts/services")
    name = f"connector_test_{secrets.token_hex(4)}"
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_SERVER}/{name}"
    with server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture(scope="session")
def ssh_keygen() -> str:
    """OpenSSH's ``ssh-keygen``, to check our signatures against the real tool.

    Missing, the test is skipped on a developer's machine and fails in CI (CI=true), which
    installs Debian's openssh-client with scripts/services.
    """
    found = shutil.which("ssh-keygen")
    if found is None:
        reason = "ssh-keygen is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install openssh-client (scripts/services)")
        pytest.skip(f"{reason}; apt-get install --no-install-recommends openssh-client")
    return found
