"""Shared fixtures: a real file keyring in a temp dir, the CLI runner, the demo folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from click.testing import CliRunner
from keyrings.alt.file import PlaintextKeyring

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


@pytest.fixture
def runner() -> CliRunner:
    """A click runner that keeps stderr apart from stdout."""
    return CliRunner()


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A private copy of the demo network (and the policies it uses, at the same place)."""
    target = tmp_path / "examples" / "demo"
    shutil.copytree(DEMO, target, ignore=shutil.ignore_patterns("*.db", "out", "anchors.log"))
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    (target / "out").mkdir()
    return target
