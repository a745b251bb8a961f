"""`connector run` and `connector ledger` with the ledger key and anchors, on the demo network."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import keyring
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from keyring.backends import null

from connector_core.credentials import service_name
from connector_core.sync import ledger
from tests.integration.test_cli import run
from tests.unit.sync.tamper import update_rows

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}
KEY_ENV = "CONNECTOR_SECRET_NETWORK_LEDGER_KEY"
NETWORK_SERVICE = service_name("Demo Climate Network", "network")


def stored_key() -> str | None:
    value: str | None = keyring.get_password(NETWORK_SERVICE, "ledger_key")
    return value


def set_ledger_key(runner: CliRunner, demo: Path, typed: str, *flags: str) -> Result:
    """`connector credentials set network ledger_key [FLAGS]`, the key `typed` on stdin."""
    return run(runner, "credentials", "set", "network", "ledger_key", *flags, cwd=demo, input=typed)


def with_anchors(demo: Path) -> Path:
    """The demo's anchor file (connector.yaml: `ledger: anchors: anchors.log`)."""
    return demo / "anchors.log"


def without_anchors(demo: Path) -> None:
    config = demo / "connector.yaml"
    config.write_text(config.read_text().replace("anchors: anchors.log", "anchors: null"))


def head_anchor(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("head anchor: ")).split()[
        -1
    ]


def test_the_first_run_generates_a_ledger_key_into_the_keyring(
    runner: CliRunner, demo: Path
) -> None:
    assert run(runner, "run", "--all", "--dry-run", cwd=demo, env=ENV).exit_code == 0
    assert stored_key() is None  # a dry run writes no ledger, so it needs no key
    first = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert first.exit_code == 0, first.output
    assert "generated a ledger key and stored it in the keyring" in first.stderr
    key = stored_key()
    assert key is not None
    assert len(key) >= 32
    assert key not in first.output
    again = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert again.exit_code == 0
    assert "generated" not in again.stderr
    assert stored_key() == key
    verified = run(runner, "ledger", "verify", cwd=demo)
    assert verified.exit_code == 0, verified.output
    assert "ledger ok: 12 row(s), hash chain intact, id map agrees" in verified.stdout
    seq, digest = ledger.parse_anchor(head_anchor(verified.stdout))
    assert seq == 12
    with sqlite3.connect(demo / "state.db") as db:
        assert db.execute("SELECT row_hash FROM ledger WHERE seq = 12").fetchone() == (
            bytes.fromhex(digest),
        )
        assert key not in repr(db.execute("SELECT * FROM ledger_head").fetchall())


@pytest.mark.parametrize("kept", ["nothing", "another value"])
def test_a_keyring_that_does_not_keep_the_generated_key_stops_the_first_run(
    runner: CliRunner, demo: Path, kept: str
) -> None:
    """A ledger key generated into a keyring that keeps nothing (keyring's null backend) or
    not what it was given would write a ledger whose key is lost at once: every later run
    refused, the ledger never verified. The store is read back first: the run stops before
    anything is written, saying where the key can live instead."""
    previous = keyring.get_keyring()
    keyring.set_keyring(null.Keyring() if kept == "nothing" else _Mangling())
    try:
        doctor = run(runner, "doctor", cwd=demo, env=ENV)
        first = run(runner, "run", "--all", cwd=demo, env=ENV)
        stored = set_ledger_key(runner, demo, "a-ledger-key-typed-in-by-the-admin", "--force")
    finally:
        keyring.set_keyring(previous)
    if kept == "nothing":  # the doctor says so before any run (a mangling one it cannot tell)
        assert doctor.exit_code == 3, doctor.output
        assert "FAIL ledger key" in doctor.stdout
        assert "keyring backend keeps nothing" in doctor.stdout
        assert KEY_ENV in doctor.stdout
    assert first.exit_code != 0
    assert "did not keep" in first.stderr
    assert KEY_ENV in first.stderr
    assert "generated a ledger key" not in first.output
    assert "Traceback" not in first.output
    with sqlite3.connect(demo / "state.db") as db:
        assert db.execute("SELECT count(*) FROM ledger").fetchone() == (0,)
    assert stored.exit_code != 0
    assert "did not keep" in stored.stderr
    assert "a-ledger-key-typed-in-by-the-admin" not in stored.output


class _Mangling(null.Keyring):
    """A backend that keeps something else than it is given."""

    def set_password(self, service: Any, username: Any, password: Any = None) -> Any:
        self.kept = password[::-1]

    def get_password(self, service: Any, username: Any, password: Any = None) -> Any:
        return getattr(self, "kept", None)


def test_a_lost_key_is_never_replaced_on_a_keyed_ledger(runner: CliRunner, demo: Path) -> None:
    assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0
    keyring.delete_password(NETWORK_SERVICE, "ledger_key")
    for args in (("run", "--all"), ("ledger", "verify")):
        result = run(runner, *args, cwd=demo, env=ENV)
        assert result.exit_code == 3, result.output
        assert "this ledger is written with a ledger key" in result.stderr
        assert "connector credentials set network ledger_key" in result.stderr
    assert stored_key() is None


def test_the_key_can_come_from_the_environment(runner: CliRunner, demo: Path) -> None:
    env = {**ENV, KEY_ENV: "a-headless-servers-ledger-key"}
    assert run(runner, "run", "--all", cwd=demo, env=env).exit_code == 0
    assert stored_key() is None
    assert run(runner, "ledger", "verify", cwd=demo, env=env).exit_code == 0
    other = run(runner, "ledger", "verify", cwd=demo, env={KEY_ENV: "some-other-ledger-key-value"})
    assert other.exit_code == 3
    assert "not the one this ledger was written with" in other.stderr


def test_credentials_set_stores_the_key_and_list_shows_it(runner: CliRunner, demo: Path) -> None:
    listed = run(runner, "credentials", "list", "network", "--json", cwd=demo)
    assert {"connection": "network", "setting": "ledger_key"} | {
        "source": "keyring ledger_key",
        "status": "missing",
    } in json.loads(listed.stdout)
    stored = set_ledger_key(runner, demo, "an-admins-own-ledger-key\n")
    assert stored.exit_code == 0, stored.output
    assert stored_key() == "an-admins-own-ledger-key"
    first = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert first.exit_code == 0
    assert "generated" not in first.stderr


def test_doctor_reports_the_ledger_key(runner: CliRunner, demo: Path) -> None:
    fresh = run(runner, "doctor", "--json", cwd=demo, env=ENV)
    finding = next(f for f in json.loads(fresh.stdout) if f["subject"] == "ledger key")
    assert finding["ok"]
    assert "the first run generates one" in finding["message"]
    assert not (demo / "state.db").exists()  # the doctor creates no state store
    assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0
    ok = run(runner, "doctor", "--json", cwd=demo, env=ENV)
    assert next(f for f in json.loads(ok.stdout) if f["subject"] == "ledger key")["ok"]
    keyring.delete_password(NETWORK_SERVICE, "ledger_key")
    lost = run(runner, "doctor", cwd=demo, env=ENV)
    assert lost.exit_code == 3
    assert "FAIL ledger key" in lost.stdout


def test_runs_append_anchors_that_verify_checks(runner: CliRunner, demo: Path) -> None:
    anchors = with_anchors(demo)
    assert run(runner, "run", "organizers-north", cwd=demo, env=ENV).exit_code == 0
    first = run(runner, "run", "partner-housing", cwd=demo, env=ENV)
    assert first.exit_code == 0
    assert "ledger anchor 12:" in first.stderr
    lines = anchors.read_text().splitlines()
    assert [line.split()[-1].split(":")[0] for line in lines] == ["7", "12"]
    verified = run(runner, "ledger", "verify", cwd=demo)
    assert verified.exit_code == 0, verified.output
    assert "2 anchor(s) hold" in verified.stdout
    # cut the tail and move the head back: only the anchors can tell
    with sqlite3.connect(demo / "state.db") as db:
        db.execute("DELETE FROM ledger WHERE seq > 7")
        db.execute(
            "DELETE FROM id_map WHERE job = (SELECT id FROM terms "
            """WHERE kind = 'job' AND value = '"partner-housing"')"""
        )
        db.execute(
            "UPDATE ledger_head SET seq = 7, "
            "row_hash = (SELECT lower(hex(row_hash)) FROM ledger WHERE seq = 7)"
        )
    plain = run(
        runner, "ledger", "verify", "--anchors", str(anchors.with_name("none.log")), cwd=demo
    )
    assert plain.exit_code == 3
    assert "cannot read the anchor file" in plain.stderr
    cut = run(runner, "ledger", "verify", cwd=demo)
    assert cut.exit_code == 3
    assert "anchor 12: the ledger has no seq 12 any more; it ends at seq 7" in cut.stderr
    assert head_anchor(cut.stdout).startswith("7:")


def test_verify_expect_checks_a_written_down_anchor(runner: CliRunner, demo: Path) -> None:
    without_anchors(demo)
    assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0
    anchor = head_anchor(run(runner, "ledger", "verify", cwd=demo).stdout)
    assert run(runner, "ledger", "verify", "--expect", anchor, cwd=demo).exit_code == 0
    with sqlite3.connect(demo / "state.db") as db:
        db.execute("DELETE FROM ledger")
        db.execute("DELETE FROM id_map")
        db.execute(f"UPDATE ledger_head SET seq = 0, row_hash = '{'0' * 64}'")
    assert run(runner, "ledger", "verify", cwd=demo).exit_code == 0  # wiped, and consistent
    wiped = run(runner, "ledger", "verify", "--expect", anchor, cwd=demo)
    assert wiped.exit_code == 3
    assert "anchor 12: the ledger has no seq 12 any more; it ends at seq 0" in wiped.stderr
    bad = run(runner, "ledger", "verify", "--expect", "12:abc", cwd=demo)
    assert bad.exit_code == 2
    assert "is not SEQ:HASH" in bad.stderr


@pytest.mark.parametrize("with_file", [False, True])
def test_an_unkeyed_ledger_is_migrated_by_the_admin(
    runner: CliRunner, demo: Path, with_file: bool
) -> None:
    anchors = with_anchors(demo) if with_file else None
    if not with_file:
        without_anchors(demo)
    env = {**ENV, KEY_ENV: "the-networks-ledger-key-for-now"}
    assert run(runner, "run", "--all", cwd=demo, env=env).exit_code == 0
    if anchors is not None:
        anchors.unlink()
    _make_unkeyed(demo / "state.db")
    refused = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert refused.exit_code == 3
    assert "connector ledger migrate" in refused.stderr
    assert "generated a ledger key" in refused.stderr  # the key it will be migrated with
    assert run(runner, "ledger", "verify", cwd=demo, env=ENV).exit_code == 3
    migrated = run(runner, "ledger", "migrate", cwd=demo, env=ENV)
    assert migrated.exit_code == 0, migrated.output
    assert "re-chained 12 row(s) with the ledger key" in migrated.stdout
    if anchors is not None:
        assert anchors.read_text().split()[-1] == head_anchor(migrated.stdout)
    assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0
    assert run(runner, "ledger", "verify", cwd=demo, env=ENV).exit_code == 0


def _make_unkeyed(path: Path) -> None:
    """Rewrite the ledger as the connector wrote it before the ledger key (format 1)."""
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.NullPool)
    with engine.begin() as conn:
        rows = list(ledger.stream(conn))
        prev = "0" * 64
        changed = []
        for entry in rows:
            row = {**ledger.as_dict(entry), "version": 1, "prev_hash": prev}
            row["row_hash"] = prev = ledger.row_hash(row, None)
            changed.append(row)
        update_rows(conn, changed)
        conn.execute(sa.text("UPDATE ledger_head SET row_hash = :h, key_check = NULL"), {"h": prev})
    engine.dispose()


def test_the_ledger_examples_of_the_operations_guide_run(runner: CliRunner, demo: Path) -> None:
    """Every `$ connector` line of docs/operations.md's ledger section, in order, on the demo
    (SEQ:HASH stands for the anchor the verify before it printed)."""
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## The ledger\n", 1)[1].split("\n## ", 1)[0]
    commands = [
        line.removeprefix("$ connector ").split("  #")[0].split()
        for line in section.splitlines()
        if line.startswith("$ connector ")
    ]
    assert len(commands) >= 6
    anchor = ""
    for args in commands:
        args = [anchor if a == "SEQ:HASH" else a for a in args]
        result = run(runner, *args, cwd=demo, env=ENV)
        assert result.exit_code == 0, (args, result.output)
        if "head anchor: " in result.stdout:
            anchor = head_anchor(result.stdout)


def test_an_anchor_command_gets_every_anchor(runner: CliRunner, demo: Path, tmp_path: Path) -> None:
    sent = tmp_path / "elsewhere.log"
    script = f"import os, sys; open({str(sent)!r}, 'a').write(sys.stdin.read())"
    config = demo / "connector.yaml"
    text = config.read_text().replace(
        "anchors: anchors.log", f"anchor_command: [{sys.executable}, -c, {json.dumps(script)}]"
    )
    config.write_text(text)
    assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0
    (line,) = sent.read_text().splitlines()
    assert line.split()[-1].startswith("12:")
    verified = run(runner, "ledger", "verify", "--anchors", str(sent), cwd=demo)
    assert verified.exit_code == 0, verified.output
    config.write_text(text.replace(f"[{sys.executable}, -c,", '["false", -c,'))
    failed = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert failed.exit_code == 3
    assert "the ledger anchor command 'false' exited with status 1" in failed.stderr


@pytest.mark.parametrize("loss", ["deleted", "emptied"])
def test_a_lost_state_store_never_runs_as_a_first_run(
    runner: CliRunner, demo: Path, loss: str
) -> None:
    """The anchors record a ledger the store lacks: a run would write everyone again under
    the new store's keys, and the old rows would never be taken back. Refused, whatever
    the command; moving the anchor file aside (starting over on purpose) lets it run."""
    anchors = with_anchors(demo)
    assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0
    shared = {path.name: path.read_bytes() for path in (demo / "out").iterdir()}
    written_down = anchors.read_bytes()
    assert (
        "ok   state store: matches its anchor file"
        in run(runner, "doctor", cwd=demo, env=ENV).stdout
    )
    state = demo / "state.db"
    if loss == "deleted":
        state.unlink()
    else:
        state.write_bytes(b"")
    commands = (["run", "--all"], ["run", "partner-housing"], ["run", "--due"], ["run", "--queue"])
    for command in commands:
        lost = run(runner, *command, cwd=demo, env=ENV)
        assert lost.exit_code == 3, (command, lost.output)
        assert "holds no ledger rows, but" in lost.stderr
        assert f"{anchors} records the network's ledger up to seq 12" in lost.stderr
        assert "Restore the state store from its backup" in lost.stderr
        assert "Traceback" not in lost.output
    assert {path.name: path.read_bytes() for path in (demo / "out").iterdir()} == shared
    assert anchors.read_bytes() == written_down  # no anchor of the empty ledger added
    checked = run(runner, "doctor", cwd=demo, env=ENV)
    assert checked.exit_code == 3
    assert "FAIL state store: the state store at" in checked.stdout
    planned = run(runner, "run", "--all", "--dry-run", cwd=demo, env=ENV)
    assert planned.exit_code == 0  # a plan writes nothing
    anchors.rename(demo / "anchors.old.log")  # starting over, the targets emptied by hand
    for path in (demo / "out").iterdir():
        path.unlink()
    again = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert again.exit_code == 0, again.output
    assert {path.name: path.read_bytes() for path in (demo / "out").iterdir()}.keys() == (
        shared.keys()
    )


def test_a_store_restored_from_an_older_backup_runs_and_says_what_it_cannot_know(
    runner: CliRunner, demo: Path
) -> None:
    with_anchors(demo)
    assert run(runner, "run", "organizers-north", cwd=demo, env=ENV).exit_code == 0
    state = demo / "state.db"
    backup = state.read_bytes()
    assert run(runner, "run", "partner-housing", cwd=demo, env=ENV).exit_code == 0
    shared = {path.name: path.read_bytes() for path in (demo / "out").iterdir()}
    state.write_bytes(backup)  # restored: the ledger ends at seq 7, the anchors at 12
    checked = run(runner, "doctor", cwd=demo, env=ENV)
    assert "warn state store: the state store's ledger ends at seq 7, but" in checked.stdout
    restored = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert restored.exit_code == 0, restored.output
    assert "warning: the state store's ledger ends at seq 7, but" in restored.stderr
    assert "records seq 12: the store was restored from an older backup" in restored.stderr
    # the backup's target-key secret: what it lost is written again over the same rows
    assert {path.name: path.read_bytes() for path in (demo / "out").iterdir()} == shared
    again = run(runner, "run", "--all", cwd=demo, env=ENV)  # its anchor is the newest now
    assert again.exit_code == 0
    assert "warning" not in again.stderr
