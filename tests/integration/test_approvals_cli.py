"""`connector approvals` end to end on the demo network: hold, review, sign, import, release."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector_core.sync.state import StateStore
from tests.integration.test_cli import run

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}
APPROVAL = """
approval:
  required_for: [first_share, new_fields]
  approvers: [alice, bob]
  quorum: 2
"""


def keygen(path: Path, name: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return path


@pytest.fixture
def network(demo: Path, tmp_path: Path) -> Path:
    """The demo network whose partner policy needs alice's and bob's approval."""
    keys = tmp_path / "keys"
    keys.mkdir()
    lines = ["", "approvers:"]
    for name, org in (("alice", "Demo Climate Network"), ("bob", "Housing Group")):
        public = keygen(keys / name, name).with_suffix(".pub").read_text().strip()
        lines.append(f"  {name}: {{organization: {org}, email: {name}@example.org, ")
        lines[-1] += f"key: '{public}'}}"
    with (demo / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    keygen(keys / "mallory", "mallory")
    policy = tmp_path / "policies" / "partner-housing.yaml"
    policy.write_text(policy.read_text(encoding="utf-8") + APPROVAL, encoding="utf-8")
    return demo


def shared(demo: Path) -> list[dict[str, str]]:
    path = demo / "out" / "partner-housing.csv"
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_a_held_set_is_reviewed_signed_remotely_imported_and_released(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    first = run(runner, "run", "partner-housing", cwd=network, env=ENV)
    assert first.exit_code == 0, first.output
    assert "awaiting approval" in first.stdout
    assert "connector approvals show 1" in first.stderr
    assert shared(network) == []
    status = run(runner, "status", "partner-housing", cwd=network, env=ENV)
    assert "approval set #1: " in status.stdout
    assert "waiting (connector approvals show 1)" in status.stdout

    listed = json.loads(run(runner, "approvals", "list", "--json", cwd=network, env=ENV).stdout)
    assert [(s["id"], s["status"]) for s in listed] == [(1, "waiting")]
    count = listed[0]["changes"]
    assert count > 0

    shown = run(runner, "approvals", "show", "1", "--json", cwd=network, env=ENV)
    assert shown.exit_code == 0, shown.output
    review = json.loads(shown.stdout)
    assert set(review["fields"]) == {"first_name", "last_name", "email", "city", "region"}
    assert review["fields"]["email"] == "mask:hash"
    assert 0 < len(review["sample"]) <= 3
    for record in review["sample"]:
        assert set(record) <= set(review["fields"])
        assert len(record["last_name"]) <= 2  # initial

    alice = run(
        runner, "approvals", "approve", "1", "--as", "alice", "--key", str(keys / "alice"),
        cwd=network, env=ENV,
    )  # fmt: skip
    assert alice.exit_code == 0, alice.output
    assert "1 of 2" in alice.stdout
    assert shared(network) == []

    out = tmp_path / "review"
    exported = run(runner, "approvals", "export", "1", "--out", str(out), cwd=network, env=ENV)
    assert exported.exit_code == 0, exported.output
    remote = json.loads((out / "review-1.json").read_text(encoding="utf-8"))
    assert remote["set_hash"] == review["set_hash"]
    assert "statements" not in remote
    for name in ("bob", "mallory"):
        text = out / f"approve-1-{name}.txt"
        text.write_bytes((out / "approve-1.txt").read_bytes())
        subprocess.run(
            ["ssh-keygen", "-Y", "sign", "-f", str(keys / name), "-n",
             "commons-connector-approval", str(text)],
            check=True, capture_output=True,
        )  # fmt: skip
    forged = run(
        runner, "approvals", "import", str(out / "approve-1-mallory.txt.sig"),
        cwd=network, env=ENV,
    )  # fmt: skip
    assert forged.exit_code == 3
    assert "the key of no approver declared" in forged.stderr
    imported = run(
        runner, "approvals", "import", str(out / "approve-1-bob.txt.sig"), cwd=network, env=ENV
    )
    assert imported.exit_code == 0, imported.output
    assert "bob approves set #1" in imported.stdout

    second = run(runner, "run", "partner-housing", cwd=network, env=ENV)
    assert second.exit_code == 0, second.output
    assert len(shared(network)) == count
    assert "approved by alice, bob" in second.stderr
    with StateStore.open(f"sqlite:///{network / 'state.db'}") as store:
        entries = list(store.ledger_entries(job="partner-housing"))
    assert len(entries) == count
    assert all(sorted(a["by"] for a in e.approvals) == ["alice", "bob"] for e in entries)

    replayed = run(
        runner, "approvals", "import", str(out / "approve-1-bob.txt.sig"), cwd=network, env=ENV
    )
    assert replayed.exit_code == 3  # the set was released: nothing waits for it
    final = run(runner, "approvals", "list", "--all", cwd=network, env=ENV)
    assert "released" in final.stdout


def test_run_all_holds_one_jobs_set_while_the_others_share(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    first = run(runner, "run", "--all", "--json", cwd=network, env=ENV)
    assert first.exit_code == 0, first.output
    counts = {s["job"]: s["counts"] for s in json.loads(first.stdout)}
    assert counts["organizers-north"]["created"] > 0
    assert counts["partner-housing"]["created"] == 0
    waiting = counts["partner-housing"]["awaiting"]
    assert waiting > 0
    for name in ("alice", "bob"):
        decided = run(
            runner, "approvals", "approve", "1", "--as", name, "--key",
            str(tmp_path / "keys" / name), cwd=network, env=ENV,
        )  # fmt: skip
        assert decided.exit_code == 0, decided.output
    second = run(runner, "run", "--all", "--json", cwd=network, env=ENV)
    counts = {s["job"]: s["counts"] for s in json.loads(second.stdout)}
    assert counts["partner-housing"]["created"] == waiting
    assert counts["organizers-north"]["created"] == 0
    assert len(shared(network)) == waiting


def test_a_fallback_approver_is_refused_before_escalation(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policies" / "partner-housing.yaml"
    text = policy.read_text(encoding="utf-8").replace(
        "  quorum: 2\n", "  quorum: 2\n  escalate_after: 2d\n  fallback_approvers: [bob]\n"
    )
    policy.write_text(text.replace("approvers: [alice, bob]", "approvers: [alice]", 1)
                      .replace("quorum: 2", "quorum: 1"), encoding="utf-8")  # fmt: skip
    assert run(runner, "run", "partner-housing", cwd=network, env=ENV).exit_code == 0
    early = run(
        runner, "approvals", "approve", "1", "--as", "bob", "--key", str(tmp_path / "keys" / "bob"),
        cwd=network, env=ENV,
    )  # fmt: skip
    assert early.exit_code == 3
    assert "bob may not decide set #1 (job partner-housing) before it escalates" in early.stderr
    wrong_key = run(
        runner, "approvals", "approve", "1", "--as", "alice", "--key",
        str(tmp_path / "keys" / "mallory"), cwd=network, env=ENV,
    )  # fmt: skip
    assert wrong_key.exit_code == 3
    assert "does not verify" in wrong_key.stderr
    assert "Traceback" not in wrong_key.output


def test_a_passphrase_protected_key_signs_with_the_passphrase_from_the_environment(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "keys" / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-words", "-f", str(locked)], check=True
    )
    public = locked.with_suffix(".pub").read_text().strip()
    config = network / "connector.yaml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "approvers:\n", f"approvers:\n  carol: {{organization: Demo, key: '{public}'}}\n"
        ),
        encoding="utf-8",
    )
    policy = tmp_path / "policies" / "partner-housing.yaml"
    policy.write_text(
        policy.read_text(encoding="utf-8").replace("[alice, bob]", "[alice, bob, carol]"),
        encoding="utf-8",
    )
    assert run(runner, "run", "partner-housing", cwd=network, env=ENV).exit_code == 0
    args = ("approvals", "approve", "1", "--as", "carol", "--key", str(locked))
    refused = run(runner, *args, cwd=network, env=ENV)
    assert refused.exit_code == 3
    assert "s3cret" not in refused.output
    signed = run(
        runner, *args, cwd=network, env={**ENV, "CONNECTOR_KEY_PASSPHRASE": "s3cret-words"}
    )
    assert signed.exit_code == 0, signed.output
    assert "carol approved set #1 (1 of 2" in signed.stdout
