"""`connector requests` end to end on the demo network: a partner asks for a campaign's
members, the floor cuts what it forbids, two approvers of two organizations decide (one away,
the fallback steps in after escalation), the data flows, the request expires and is taken back.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from connector_core.policy.share_requests import load_request, sign_request
from tests.integration.test_cli import run
from tests.postgres import drop_schema, new_schema

# ahead of the real clock: CONNECTOR_NOW only moves time forward
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
REQUESTS = """
requests:
  source: members
  approval:
    approvers: [alice, bob]
    quorum: 2
    fallback_approvers: [carol]
    escalate_after: 2d
    expire_after: 14d
"""


def keygen(path: Path, name: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return path


def env(at: dt.datetime) -> dict[str, str]:
    return {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests", "CONNECTOR_NOW": at.isoformat()}


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest) -> Iterator[str]:
    """connector.yaml's state: section: the default SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield ""
        return
    base: str = request.getfixturevalue("pg_database")
    schema, url = new_schema(base)
    yield f"state: {{url: '{url}'}}\n"
    drop_schema(base, schema)


@pytest.fixture
def network(demo: Path, tmp_path: Path, state: str) -> Path:
    """The demo network with three approvers of two organizations, answering requests."""
    keys = tmp_path / "keys"
    keys.mkdir()
    lines = ["", "approvers:"]
    for name, org in (("alice", "Demo Climate Network"), ("bob", "Housing Group"),
                      ("carol", "Demo Climate Network")):  # fmt: skip
        public = keygen(keys / name, name).with_suffix(".pub").read_text().strip()
        lines.append(f"  {name}: {{organization: {org}, email: {name}@example.org, ")
        lines[-1] += f"key: '{public}'}}"
    with (demo / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n" + REQUESTS + state)
    return demo


def write_request(
    tmp_path: Path,
    fields: list[str],
    *,
    sign: bool = True,
    delivery: str | None = None,
    why: str = "To invite the campaign's members to the joint march.",
    scope: dict[str, Any] | None = None,
) -> Path:
    """A request by the partner, signed with its own key; `delivery`: the path it asks
    its people be written to (default: a file of its own)."""
    key = tmp_path / "keys" / "partner"
    if not key.exists():
        keygen(key, "partner")
    body = {
        "version": 1,
        "kind": "share-request",
        "id": "sunrise-march",
        "network": "Demo Climate Network",
        "requester": {
            "name": "Ana Souza",
            "organization": "Sunrise Housing Co-op",
            "contact": "ana@sunrise.example.org",
            "public_key": key.with_suffix(".pub").read_text().strip(),
        },
        "purpose": "share_with_partners",
        "fields": fields,
        "scope": scope or {"groups": {"any_of": ["climate-campaign"]}},
        "delivery": {
            "adapter": "csv",
            "settings": {"path": delivery or str(tmp_path / "partner.csv")},
        },
        "duration": "90d",
        "why": why,
    }
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    if sign:
        signature = sign_request(load_request(path), key)
        body["signature"] = signature
        path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def received(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "partner.csv"
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def sign_remote(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(tmp_path / "keys" / name), "-n",
         "commons-connector-approval", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path.with_suffix(".txt.sig")


def test_a_request_is_received_decided_shared_expired_and_taken_back(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    request = write_request(tmp_path, ["first_name", "email", "city", "street_address"])
    got = run(runner, "requests", "receive", str(request), cwd=network, env=env(T0))
    assert got.exit_code == 0, got.output
    assert "cut: street_address" in got.stdout
    again = run(runner, "requests", "receive", str(request), cwd=network, env=env(T0))
    assert "was received before" in again.stdout

    shown = run(runner, "requests", "show", "sunrise-march", "--json", cwd=network, env=env(T0))
    assert shown.exit_code == 0, shown.output
    review = json.loads(shown.stdout)
    assert set(review["allowed"]) == {"first_name", "email", "city"}
    assert "street_address" in review["cut"]
    assert review["counts"]["shared"] > 0
    for record in review["sample"]:
        assert set(record) <= {"first_name", "email", "city"}
    assert received(tmp_path) == []  # a preview writes nothing

    alice = run(
        runner, "requests", "decide", "sunrise-march", "approve", "--as", "alice",
        "--key", str(keys / "alice"), cwd=network, env=env(T0),
    )  # fmt: skip
    assert alice.exit_code == 0, alice.output
    assert "1 of 2" in alice.stdout
    early = sign_remote(tmp_path, "carol", review["approve_text"])
    refused = run(
        runner, "requests", "decide", "sunrise-march", "approve", "--statement", str(early),
        cwd=network, env=env(T0 + dt.timedelta(hours=1)),
    )  # fmt: skip
    assert refused.exit_code == 3
    assert "before it escalates" in refused.stderr

    later = T0 + dt.timedelta(days=3)  # bob is away; the fallback decides after escalation
    carol = run(
        runner, "requests", "decide", "sunrise-march", "approve", "--statement", str(early),
        cwd=network, env=env(later),
    )  # fmt: skip
    assert carol.exit_code == 0, carol.output
    assert "approved by alice, carol" in carol.stdout
    assert (network / "requests" / "sunrise-march.job.yaml").exists()

    ran = run(runner, "run", "request-sunrise-march", cwd=network, env=env(later))
    assert ran.exit_code == 0, ran.output
    rows = received(tmp_path)
    assert rows
    assert set(rows[0]) <= {"first_name", "email", "city", "id"} | {"First Name", "Email", "City"}
    assert not any("Road" in str(v) or "Lane" in str(v) for r in rows for v in r.values())
    first = _first_shared(network, later)
    who = run(runner, "who-has", first, cwd=network, env=env(later))
    assert "under share request sunrise-march" in who.stdout
    assert "approved by alice, carol" in who.stdout  # the request's approvals
    assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d\)", who.stdout), who.stdout
    who_json = json.loads(
        run(runner, "who-has", first, "--json", cwd=network, env=env(later)).stdout
    )
    assert sorted(a["by"] for a in who_json[0]["approvals"]) == ["alice", "carol"]
    shares = [
        row
        for line in run(runner, "ledger", "export", cwd=network, env=env(later)).stdout.splitlines()
        if (row := json.loads(line))["job"] == "request-sunrise-march"
        and row["action"] in ("create", "update")
    ]
    assert shares
    for row in shares:  # every share made under the request carries its approvals
        assert sorted(a["by"] for a in row["approvals"]) == ["alice", "carol"]
        assert all(len(a["statement"]) == 64 for a in row["approvals"])

    after = later + dt.timedelta(days=91)
    ended = run(runner, "run", "--all", cwd=network, env=env(after))
    assert ended.exit_code == 0, ended.output
    assert "request sunrise-march: expired" in ended.stderr
    assert "was taken back" in ended.stderr
    assert received(tmp_path) == []
    listed = json.loads(
        run(runner, "requests", "list", "--json", cwd=network, env=env(after)).stdout
    )
    assert [(r["id"], r["status"]) for r in listed] == [("sunrise-march", "ended")]
    assert run(runner, "who-has", first, cwd=network, env=env(after)).stdout.startswith("no target")

    exported = run(runner, "ledger", "export", cwd=network, env=env(after))
    actions = [json.loads(line)["action"] for line in exported.stdout.splitlines() if line]
    for action in ("request-received", "request-approved", "request-expired",
                   "request-taken-back"):  # fmt: skip
        assert action in actions
    verified = run(runner, "ledger", "verify", cwd=network, env=env(after))
    assert verified.exit_code == 0, verified.output


def _first_shared(network: Path, at: dt.datetime) -> str:
    with (network / "data" / "members.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            ok = row["Partner sharing OK"] == "yes" and row["Contact OK"] == "yes"
            if "climate-campaign" in row["Groups"] and ok:
                return row["Contact ID"]
    raise AssertionError("no member shared")


def test_an_unsigned_or_altered_request_is_refused(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    unsigned = write_request(tmp_path, ["email"], sign=False)
    got = run(runner, "requests", "receive", str(unsigned), cwd=network, env=env(T0))
    assert got.exit_code == 3
    assert "not signed" in got.stderr
    signed = write_request(tmp_path, ["email"])
    text = signed.read_text(encoding="utf-8").replace("90d", "900d")
    signed.write_text(text, encoding="utf-8")
    got = run(runner, "requests", "receive", str(signed), cwd=network, env=env(T0))
    assert got.exit_code == 3, got.output


def test_a_denial_denies_and_the_requester_can_revoke(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    request = write_request(tmp_path, ["email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    for name in ("alice", "bob"):
        done = run(
            runner, "requests", "decide", "sunrise-march", "approve", "--as", name,
            "--key", str(keys / name), cwd=network, env=env(T0),
        )  # fmt: skip
        assert done.exit_code == 0, done.output
    assert run(runner, "run", "request-sunrise-march", cwd=network, env=env(T0)).exit_code == 0
    assert received(tmp_path)
    shown = json.loads(
        run(runner, "requests", "show", "sunrise-march", "--json", cwd=network, env=env(T0)).stdout
    )
    text = tmp_path / "revoke.txt"
    text.write_text(shown["revocation_text"], encoding="utf-8")
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(keys / "partner"), "-n",
         "commons-connector-request", str(text)],
        check=True, capture_output=True,
    )  # fmt: skip
    forged = tmp_path / "forged.txt"
    forged.write_text(shown["revocation_text"], encoding="utf-8")
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(keys / "alice"), "-n",
         "commons-connector-request", str(forged)],
        check=True, capture_output=True,
    )  # fmt: skip
    bad = run(
        runner, "requests", "revoke", "sunrise-march", "--statement", f"{forged}.sig",
        cwd=network, env=env(T0),
    )  # fmt: skip
    assert bad.exit_code == 3
    revoked = run(
        runner, "requests", "revoke", "sunrise-march", "--statement", f"{text}.sig",
        cwd=network, env=env(T0),
    )  # fmt: skip
    assert revoked.exit_code == 0, revoked.output
    assert "revoked by the requester" in revoked.stdout
    ran = run(runner, "run", "request-sunrise-march", cwd=network, env=env(T0))
    assert ran.exit_code == 0, ran.output
    assert received(tmp_path) == []
    assert "was taken back (revoked)" in ran.stderr


def approve_by_two(runner: CliRunner, network: Path, tmp_path: Path, at: dt.datetime) -> None:
    keys = tmp_path / "keys"
    for name in ("alice", "bob"):
        done = run(
            runner, "requests", "decide", "sunrise-march", "approve", "--as", name,
            "--key", str(keys / name), cwd=network, env=env(at),
        )  # fmt: skip
        assert done.exit_code == 0, done.output


def test_one_denial_denies_and_nothing_is_shared(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    request = write_request(tmp_path, ["email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    denied = run(
        runner, "requests", "decide", "sunrise-march", "deny", "--as", "bob",
        "--key", str(keys / "bob"), cwd=network, env=env(T0),
    )  # fmt: skip
    assert denied.exit_code == 0, denied.output
    assert "denied by bob" in denied.stdout
    late = run(
        runner, "requests", "decide", "sunrise-march", "approve", "--as", "alice",
        "--key", str(keys / "alice"), cwd=network, env=env(T0),
    )  # fmt: skip
    assert late.exit_code == 3
    assert not (network / "requests" / "sunrise-march.job.yaml").exists()
    assert run(runner, "run", "--all", cwd=network, env=env(T0)).exit_code == 0
    assert received(tmp_path) == []


def test_a_request_nobody_decides_lapses(runner: CliRunner, network: Path, tmp_path: Path) -> None:
    request = write_request(tmp_path, ["email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    later = T0 + dt.timedelta(days=15)
    listed = run(runner, "requests", "list", "--json", cwd=network, env=env(later))
    assert "nobody decided within 14d" in listed.stderr
    assert [r["status"] for r in json.loads(listed.stdout)] == ["lapsed"]


def test_an_interrupted_take_back_ends_only_when_complete_and_tells_the_requester(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    from aiosmtpd.controller import Controller

    from tests.unit.test_notify import Inbox, free_port

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with (network / "connector.yaml").open("a", encoding="utf-8") as f:
            f.write(
                f"notifications:\n  email: {{host: 127.0.0.1, port: {port}, security: none, "
                "sender: connector@example.org}\n"
            )
        request = write_request(tmp_path, ["first_name", "email"])
        assert (
            run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code
            == 0
        )
        approve_by_two(runner, network, tmp_path, T0)
        assert run(runner, "run", "request-sunrise-march", cwd=network, env=env(T0)).exit_code == 0
        shared = received(tmp_path)
        assert shared
        held = (tmp_path / "partner.csv").read_bytes()
        (tmp_path / "partner.csv").unlink()
        (tmp_path / "partner.csv").mkdir()  # the target cannot be written: the take-back fails
        after = T0 + dt.timedelta(days=91)
        failed = run(runner, "run", "request-sunrise-march", cwd=network, env=env(after))
        assert failed.exit_code != 0
        assert "request sunrise-march: expired" in failed.stderr
        assert "was taken back" not in failed.stderr
        listed = json.loads(
            run(runner, "requests", "list", "--json", cwd=network, env=env(after)).stdout
        )
        assert listed[0]["status"] == "expired"  # not ended while the requester holds data
        (tmp_path / "partner.csv").rmdir()
        (tmp_path / "partner.csv").write_bytes(held)
        rerun = run(runner, "run", "request-sunrise-march", cwd=network, env=env(after))
        assert rerun.exit_code == 0, rerun.output
        assert "was taken back (expired)" in rerun.stderr
        assert received(tmp_path) == []
    finally:
        controller.stop()
    to_requester = [m for rcpt, m in inbox.messages if rcpt == ["ana@sunrise.example.org"]]
    assert len(to_requester) == 2  # expired, then taken back
    bodies = "".join(str(m) for m in to_requester)
    assert "sunrise-march" in bodies
    for row in shared:  # no personal data in a notice
        assert row.get("email", "@@") not in bodies


def test_a_floor_change_after_receiving_needs_a_new_review(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    request = write_request(tmp_path, ["first_name", "email", "city"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    alice = run(
        runner, "requests", "decide", "sunrise-march", "approve", "--as", "alice",
        "--key", str(keys / "alice"), cwd=network, env=env(T0),
    )  # fmt: skip
    assert alice.exit_code == 0, alice.output
    floor = tmp_path / "policies" / "network-floor.yaml"
    floor.write_text(
        floor.read_text(encoding="utf-8").replace("  pii.location.coarse: show\n", ""),
        encoding="utf-8",
    )  # the floor no longer lets cities out
    bob = run(
        runner, "requests", "decide", "sunrise-march", "approve", "--as", "bob",
        "--key", str(keys / "bob"), cwd=network, env=env(T0),
    )  # fmt: skip
    assert bob.exit_code == 3
    assert "the network floor changed" in bob.stderr
    again = run(runner, "requests", "receive", str(request), cwd=network, env=env(T0))
    assert again.exit_code == 0, again.output
    assert "cut: city" in again.stdout
    approve_by_two(runner, network, tmp_path, T0)  # alice's first statement no longer counts
    assert run(runner, "run", "request-sunrise-march", cwd=network, env=env(T0)).exit_code == 0
    assert received(tmp_path)
    assert all("city" not in row for row in received(tmp_path))


def test_a_revocation_document_is_received_and_takes_everything_back(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    request = write_request(tmp_path, ["email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    approve_by_two(runner, network, tmp_path, T0)
    assert run(runner, "run", "request-sunrise-march", cwd=network, env=env(T0)).exit_code == 0
    assert received(tmp_path)
    shown = json.loads(
        run(runner, "requests", "show", "sunrise-march", "--json", cwd=network, env=env(T0)).stdout
    )
    text = tmp_path / "revoke.txt"
    text.write_text(shown["revocation_text"], encoding="utf-8")
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(tmp_path / "keys" / "partner"), "-n",
         "commons-connector-request", str(text)],
        check=True, capture_output=True,
    )  # fmt: skip
    doc = tmp_path / "revocation.yaml"
    body = {
        "version": 1,
        "kind": "share-request-revocation",
        "request": "sunrise-march",
        "signature": (tmp_path / "revoke.txt.sig").read_text(encoding="utf-8"),
    }
    doc.write_text(yaml.safe_dump(body), encoding="utf-8")
    got = run(runner, "requests", "receive", str(doc), cwd=network, env=env(T0))
    assert got.exit_code == 0, got.output
    assert "revoked by the requester" in got.stdout
    ran = run(runner, "run", "--all", cwd=network, env=env(T0))
    assert ran.exit_code == 0, ran.output
    assert received(tmp_path) == []


def test_approvers_are_told_when_a_request_waits_and_the_fallback_when_it_escalates(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    from aiosmtpd.controller import Controller

    from tests.unit.test_notify import Inbox, free_port

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with (network / "connector.yaml").open("a", encoding="utf-8") as f:
            f.write(
                f"notifications:\n  email: {{host: 127.0.0.1, port: {port}, security: none, "
                "sender: connector@example.org}\n"
            )
        request = write_request(tmp_path, ["email"])
        got = run(runner, "requests", "receive", str(request), cwd=network, env=env(T0))
        assert got.exit_code == 0, got.output
        waiting = sorted(r for rcpt, _m in inbox.messages for r in rcpt)
        assert waiting == ["alice@example.org", "bob@example.org"]
        later = T0 + dt.timedelta(days=3)
        listed = run(runner, "requests", "list", cwd=network, env=env(later))
        assert "fallback approvers (carol) may decide now" in listed.stderr
        again = run(runner, "requests", "list", cwd=network, env=env(later))
        assert "may decide now" not in again.stderr  # said once
    finally:
        controller.stop()
    escalated = [rcpt for rcpt, _m in inbox.messages[2:]]
    assert escalated == [["carol@example.org"]]
    bodies = "".join(str(m) for _r, m in inbox.messages)
    assert "connector requests show sunrise-march" in bodies


def test_a_request_statement_given_to_approvals_import_says_where_it_goes(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    request = write_request(tmp_path, ["email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    shown = json.loads(
        run(runner, "requests", "show", "sunrise-march", "--json", cwd=network, env=env(T0)).stdout
    )
    signed = sign_remote(tmp_path, "alice", shown["approve_text"])
    got = run(runner, "approvals", "import", str(signed), cwd=network, env=env(T0))
    assert got.exit_code == 3
    assert "connector requests decide sunrise-march approve --statement" in got.stderr


def test_an_undeclared_request_approver_is_an_error_naming_the_line(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    config = network / "connector.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "fallback_approvers: [carol]", "fallback_approvers: [karol]"
    )
    config.write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "[karol]" in row)
    got = run(runner, "requests", "receive", str(write_request(tmp_path, ["email"])),
              cwd=network, env=env(T0))  # fmt: skip
    assert got.exit_code == 3
    assert f"connector.yaml:{line}:" in got.stderr
    assert "'karol' is not a person or group" in got.stderr
    assert "Traceback" not in got.output


def test_the_clock_override_never_postpones_an_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONNECTOR_NOW (tests, the example) may move the clock forward, never back: left set on
    a real install, it could otherwise keep a request alive past its expiry."""
    from connector_core.cli.sync import share_requests_now

    real = dt.datetime.now(dt.UTC)
    monkeypatch.setenv("CONNECTOR_NOW", (real - dt.timedelta(days=30)).isoformat())
    assert share_requests_now() >= real
    ahead = real + dt.timedelta(days=30)
    monkeypatch.setenv("CONNECTOR_NOW", ahead.isoformat())
    assert share_requests_now() == ahead


def test_the_scheduler_ends_a_request_whose_time_is_over_before_its_job_runs(
    runner: CliRunner,
    network: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`connector schedule` (and a worker) run jobs as `run --due` does: a request that
    expired before its job's first run shares nobody, and ends."""
    from connector_core.cli.app import App
    from connector_core.cli.sync import _run_due

    request = write_request(tmp_path, ["email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    approve_by_two(runner, network, tmp_path, T0)
    for name, value in env(T0 + dt.timedelta(days=91)).items():  # past its 90 days
        monkeypatch.setenv(name, value)
    _run_due(App(network / "connector.yaml"))
    assert "request sunrise-march: expired" in capsys.readouterr().err
    assert received(tmp_path) == []
    listed = run(runner, "requests", "list", "--json", cwd=network)
    assert [r["status"] for r in json.loads(listed.stdout)] == ["ended"]


@pytest.mark.parametrize(
    ("where", "what"),
    [
        ("data/members.csv", "connections.members.settings.path"),
        ("connector.yaml", "connector.yaml itself"),
        ("out/organizers-north.csv", "connections.organizers-north.settings.path"),
    ],
)
def test_a_request_never_delivers_into_the_networks_own_files(
    runner: CliRunner, network: Path, tmp_path: Path, where: str, what: str
) -> None:
    """The requester names the delivery: a path that is a source, another target or the
    connector's own file is refused when the request is received (nothing stored)."""
    request = write_request(tmp_path, ["email"], delivery=str(network / where))
    got = run(runner, "requests", "receive", str(request), cwd=network, env=env(T0))
    assert got.exit_code == 3, got.output
    assert "delivery.settings.path" in got.stderr
    assert what in got.stderr
    listed = run(runner, "requests", "list", "--json", cwd=network, env=env(T0))
    assert json.loads(listed.stdout) == []


def test_what_a_requester_wrote_is_shown_literally_with_where_it_goes(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    """An escape sequence, a carriage return or a direction override in a request cannot
    redraw or hide what an approver reads; the delivery is shown."""
    forged = "Newsletter only.\x1b[2K\rwhy: Annual report \u202eylno"
    request = write_request(tmp_path, ["email"], why=forged)
    got = run(runner, "requests", "receive", str(request), cwd=network, env=env(T0))
    assert got.exit_code == 0, got.output
    for args in (["show", "sunrise-march"], ["list"]):
        shown = run(runner, "requests", *args, cwd=network, env=env(T0))
        assert shown.exit_code == 0, shown.output
        assert "\x1b" not in shown.output
        assert "\r" not in shown.output
        assert "\u202e" not in shown.output
    shown = run(runner, "requests", "show", "sunrise-march", cwd=network, env=env(T0)).stdout
    assert "why: Newsletter only.\\x1b[2K\\rwhy: Annual report \\u202eylno" in shown
    assert f"delivery: csv (path={tmp_path / 'partner.csv'})" in shown


def test_a_statement_that_is_not_text_is_refused_by_name(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    request = write_request(tmp_path, ["email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    binary = tmp_path / "statement.sig"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for args in (["decide", "sunrise-march", "approve"], ["revoke", "sunrise-march"]):
        got = run(runner, "requests", *args, "--statement", str(binary), cwd=network, env=env(T0))
        assert got.exit_code == 3, got.output
        assert f"{binary}: not a signed statement (it is not UTF-8 text)" in got.stderr
        assert "Traceback" not in got.output


def test_a_floor_loosened_after_approval_ends_the_request_instead_of_widening_it(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    """Approved while the floor hashed emails: when the floor stops masking them, the
    request never sends a clear email; it ends (everything it shared taken back) and the
    requester sends it again for a new decision."""
    floor = tmp_path / "policies" / "network-floor.yaml"
    text = floor.read_text(encoding="utf-8")
    floor.write_text(text.replace("  pii.contact: show\n", "  pii.contact: show\n  email: hash\n"))
    request = write_request(tmp_path, ["first_name", "email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    approve_by_two(runner, network, tmp_path, T0)
    assert run(runner, "run", "request-sunrise-march", cwd=network, env=env(T0)).exit_code == 0
    shared = received(tmp_path)
    assert shared
    assert not any("@" in value for row in shared for value in row.values())
    floor.write_text(text)  # the admin loosens the floor again
    later = run(runner, "run", "--all", cwd=network, env=env(T0))
    assert later.exit_code == 0, later.output
    assert "request sunrise-march: revoked: the network floor changed" in later.stderr
    assert "email: approved mask:hash, now show" in later.stderr
    assert received(tmp_path) == []  # taken back in that run, no clear email sent
    listed = run(runner, "requests", "list", "--json", cwd=network, env=env(T0))
    assert [r["status"] for r in json.loads(listed.stdout)] == ["ended"]


def test_a_request_whose_scope_tests_a_field_the_floor_forbids_is_refused_when_received(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    """The floor forbids street_address: a scope testing it could never run, and would tell
    the requester something about addresses. Refused at receive, naming the request file,
    not a generated or temporary one; nothing stored."""
    request = write_request(
        tmp_path, ["email"], scope={"street_address": {"starts_with": "25 Station"}}
    )
    got = run(runner, "requests", "receive", str(request), cwd=network, env=env(T0))
    assert got.exit_code == 3, got.output
    assert f"{request}: the request does not fit this network's floor" in got.stderr
    assert "street_address" in got.stderr
    assert "policy.yaml" not in got.stderr  # no temporary or generated file named
    listed = run(runner, "requests", "list", "--json", cwd=network, env=env(T0))
    assert json.loads(listed.stdout) == []


def test_the_approvals_commands_point_a_request_set_to_the_requests_commands(
    runner: CliRunner, network: Path, tmp_path: Path
) -> None:
    request = write_request(tmp_path, ["email"])
    assert run(runner, "requests", "receive", str(request), cwd=network, env=env(T0)).exit_code == 0
    listed = run(runner, "approvals", "list", "--json", cwd=network, env=env(T0))
    (waiting,) = json.loads(listed.stdout)
    for args in (["show"], ["export"]):
        got = run(runner, "approvals", *args, str(waiting["id"]), cwd=network, env=env(T0))
        assert got.exit_code == 3, got.output
        assert f"set #{waiting['id']} decides share request sunrise-march" in got.stderr
        assert "connector requests show sunrise-march" in got.stderr
