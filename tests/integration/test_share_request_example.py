"""The share-request example runs with one command and does what its README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.postgres import REPO


def test_the_share_request_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "share-request" / "run.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "cut: street_address" in out
    assert "dana may not decide" in out
    assert "approved by alice, dana" in out
    assert "the partner's CSV holds 0 people" in out
    assert "under share request sunrise-march" in out
    assert "request-taken-back" in out
    assert "OK: shared under approval, expired, taken back." in out
