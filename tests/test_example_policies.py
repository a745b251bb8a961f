"""Every example policy in policies/ loads cleanly and passes its own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector_core.policy.loader import load_policy
from connector_core.policy.policytest import find_test_files, run_test_file

POLICIES = Path(__file__).resolve().parent.parent / "policies"
PURPOSES = ["contact_me", "local_organizing", "share_with_partners", "public_map"]
FLOOR = POLICIES / "network-floor.yaml"
FILES = sorted(p for p in POLICIES.glob("*.yaml") if not p.name.endswith("_test.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_policy_loads_without_warnings(path: Path) -> None:
    policy = load_policy(path, purposes=PURPOSES, floor=FLOOR)
    assert policy.warnings == ()
    assert path.read_text(encoding="utf-8").startswith("# yaml-language-server: $schema=")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_policy_has_tests(path: Path) -> None:
    assert path.with_name(path.stem + "_test.yaml").is_file()


@pytest.mark.parametrize("test_file", find_test_files([POLICIES]), ids=lambda p: p.name)
def test_example_policy_tests_pass(test_file: Path) -> None:
    results = run_test_file(test_file, purposes=PURPOSES)
    assert results
    assert [r.differences for r in results if not r.passed] == []
