"""`connector run/plan/runs/ledger/who-has` end to end on the demo network."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector_core.sync.state import StateStore
from tests.integration.test_cli import run

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_plan_writes_nothing(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "plan", "organizers-north", "--json", cwd=demo, env=ENV)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["counts"]["created"] == len(plan["changes"]) > 0
    assert all(
        set(c["projection"]) <= {"first_name", "last_name", "city", "phone"}
        for c in plan["changes"]
    )
    assert not (demo / "out" / "organizers-north.csv").exists()


def test_run_shares_then_takes_back_withdrawn_consent(runner: CliRunner, demo: Path) -> None:
    first = run(runner, "run", "--all", "--json", cwd=demo, env=ENV)
    assert first.exit_code == 0, first.output
    summaries = {s["job"]: s["counts"] for s in json.loads(first.stdout)}
    assert summaries["organizers-north"]["created"] == 7
    shared = rows(demo / "out" / "organizers-north.csv")
    assert len(shared) == 7
    assert set(shared[0]) == {"id", "first_name", "last_name", "phone", "city"}

    members = demo / "data" / "members.csv"
    text = members.read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("M0018,"))
    assert line.endswith(",yes,yes,yes,no,no")  # contact, local organizing, partners, map
    withdrawn = line.removesuffix(",yes,yes,yes,no,no") + ",yes,no,yes,no,no"
    members.write_text(text.replace(line, withdrawn), encoding="utf-8")
    who = run(runner, "who-has", "M0018", "--json", cwd=demo, env=ENV)
    assert sorted(h["job"] for h in json.loads(who.stdout)) == [
        "organizers-north",
        "partner-housing",
    ]

    second = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert second.exit_code == 0, second.output
    assert "deleted 1" in second.stdout
    assert len(rows(demo / "out" / "organizers-north.csv")) == 6
    who = run(runner, "who-has", "M0018", "--json", cwd=demo, env=ENV)
    assert [h["job"] for h in json.loads(who.stdout)] == ["partner-housing"]


def test_second_run_reads_nothing(runner: CliRunner, demo: Path) -> None:
    assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0
    again = run(runner, "run", "--all", "--json", cwd=demo, env=ENV)
    assert [s["counts"]["read"] for s in json.loads(again.stdout)] == [0, 0]
    history = json.loads(run(runner, "runs", "--json", cwd=demo).stdout)
    assert len(history) == 4
    assert {r["status"] for r in history} == {"ok"}


def test_ledger_verify_and_export(runner: CliRunner, demo: Path, tmp_path: Path) -> None:
    assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0
    ok = run(runner, "ledger", "verify", cwd=demo)
    assert ok.exit_code == 0, ok.output
    assert "12 row(s)" in ok.stdout
    out = tmp_path / "ledger.jsonl"
    assert run(runner, "ledger", "export", "-o", str(out), cwd=demo).exit_code == 0
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(entries) == 12
    assert "Wen" not in out.read_text()  # field names and masks, never values
    with sqlite3.connect(demo / "state.db") as db:
        db.execute("UPDATE ledger SET record_key = 'elsewhere' WHERE seq = 3")
    tampered = run(runner, "ledger", "verify", cwd=demo)
    assert tampered.exit_code == 3
    assert "seq 3" in tampered.stderr


def test_run_due_runs_what_never_ran(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "run", "--due", "--json", cwd=demo, env=ENV)
    assert result.exit_code == 0, result.output
    assert {s["job"] for s in json.loads(result.stdout)} == {"organizers-north", "partner-housing"}
    again = run(runner, "run", "--due", "--json", cwd=demo, env=ENV)
    assert json.loads(again.stdout) == []


def test_run_needs_exactly_one_selection(runner: CliRunner, demo: Path) -> None:
    assert run(runner, "run", cwd=demo).exit_code == 2
    assert run(runner, "run", "organizers-north", "--all", cwd=demo).exit_code == 2
    typo = run(runner, "run", "organisers-north", cwd=demo)
    assert typo.exit_code == 3
    assert "did you mean 'organizers-north'?" in typo.stderr


def test_a_missing_hash_key_stops_before_anything_is_written(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "run", "partner-housing", cwd=demo)
    assert result.exit_code == 3
    assert "CONNECTOR_DEMO_HASH_KEY" in result.stderr
    assert not (demo / "out" / "partner-housing.csv").exists()


def test_plan_shows_only_the_fields_an_update_changes(runner: CliRunner, demo: Path) -> None:
    assert run(runner, "run", "organizers-north", cwd=demo, env=ENV).exit_code == 0
    members = demo / "data" / "members.csv"
    text = members.read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("M0018,"))
    members.write_text(text.replace(line, line.replace(",Sheffield,", ",Leeds,")), encoding="utf-8")
    result = run(runner, "plan", "organizers-north", "--json", cwd=demo, env=ENV)
    changes = json.loads(result.stdout)["changes"]
    assert [(c["action"], c["source_id"], c["changed_fields"]) for c in changes] == [
        ("update", "M0018", ["city"])
    ]
    text_plan = run(runner, "plan", "organizers-north", cwd=demo, env=ENV).stdout
    assert "~ update M0018" in text_plan
    assert "city='Leeds'" in text_plan
    assert "first_name" not in text_plan


def test_plan_and_dry_run_create_no_state_store(runner: CliRunner, demo: Path) -> None:
    assert not list(demo.glob("*.db"))
    for args in (["plan", "organizers-north"], ["run", "--all", "--dry-run"]):
        result = run(runner, *args, cwd=demo, env=ENV)
        assert result.exit_code == 0, result.output
    assert not list(demo.glob("*.db"))


def test_an_emptied_export_is_held_back_until_accepted(runner: CliRunner, demo: Path) -> None:
    assert run(runner, "run", "partner-housing", cwd=demo, env=ENV).exit_code == 0
    members = demo / "data" / "members.csv"
    members.write_text(members.read_text(encoding="utf-8").splitlines()[0] + "\n")  # header only
    held = run(runner, "run", "partner-housing", cwd=demo, env=ENV)
    assert held.exit_code == 5, held.output
    assert "held back" in held.stderr
    assert "--accept-deletes" in held.stderr
    assert len(rows(demo / "out" / "partner-housing.csv")) > 0
    plan = run(runner, "plan", "partner-housing", cwd=demo, env=ENV)
    assert plan.stdout.count("- delete") == len(rows(demo / "out" / "partner-housing.csv"))
    status = run(runner, "status", "partner-housing", cwd=demo, env=ENV)
    assert status.exit_code == 1
    assert "held back by the mass-delete guard" in status.stdout
    n = json.loads(run(runner, "status", "--json", cwd=demo, env=ENV).stdout)
    owed = {entry["job"]: len(entry["outstanding"]) for entry in n}
    accepted = run(
        runner,
        "run",
        "partner-housing",
        "--accept-deletes",
        str(owed["partner-housing"]),
        cwd=demo,
        env=ENV,
    )
    assert accepted.exit_code == 0, accepted.output
    assert rows(demo / "out" / "partner-housing.csv") == []
    assert run(runner, "status", "partner-housing", cwd=demo, env=ENV).exit_code == 0


def test_runs_shows_a_killed_run_as_killed(runner: CliRunner, demo: Path) -> None:
    assert run(runner, "run", "partner-housing", cwd=demo, env=ENV).exit_code == 0
    (db,) = demo.glob("*.db")
    with sqlite3.connect(db) as conn:  # what a SIGKILLed run leaves behind
        conn.execute("UPDATE runs SET status = 'running', finished_at = NULL")
    result = run(runner, "runs", "--json", cwd=demo, env=ENV)
    assert [r["status"] for r in json.loads(result.stdout)] == ["killed"]


def test_one_refused_job_does_not_keep_the_others_from_running(
    runner: CliRunner, demo: Path
) -> None:
    policy = demo.parent.parent / "policies" / "partner-housing.yaml"
    text = policy.read_text(encoding="utf-8")
    policy.write_text(text + "  tags: show\n", encoding="utf-8")  # the CSV has no tags
    result = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "partner-housing: not run:" in result.stderr
    assert "organizers-north: read" in result.stdout
    assert (demo / "out" / "organizers-north.csv").exists()


def test_a_target_another_job_is_writing_stops_the_run_with_exit_4(
    runner: CliRunner, demo: Path
) -> None:
    store = StateStore.open(f"sqlite:///{demo / 'state.db'}")
    with store, store.lock("organizers-all", target="organizers-north"):
        result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 4, result.output
    assert "target 'organizers-north' is being written by job 'organizers-all'" in result.output
    assert not (demo / "out" / "organizers-north.csv").exists()


def test_two_jobs_writing_one_file_are_refused_with_exit_3(runner: CliRunner, demo: Path) -> None:
    config = demo / "connector.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("    target: partner-housing", "    target: organizers-north"), "utf-8"
    )
    result = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "jobs 'organizers-north' (line " in result.output
    assert "and 'partner-housing' both write connection 'organizers-north'" in result.output


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The cursor of each CSV read from now on (None: a full read)."""
    from connector_csv import CsvAdapter

    reads: list[str | None] = []
    read = CsvAdapter.read

    def counted(self: CsvAdapter, **kwargs: Any) -> Any:
        reads.append(kwargs.get("cursor"))
        return read(self, **kwargs)

    monkeypatch.setattr(CsvAdapter, "read", counted)
    return reads


def test_run_all_reads_a_shared_source_once(
    runner: CliRunner, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both demo jobs share the members file: `run --all` reads it once, and each job
    still gets its own summary, run row and state."""
    reads = count_reads(monkeypatch)
    first = run(runner, "run", "--all", "--json", cwd=demo, env=ENV)
    assert first.exit_code == 0, first.output
    assert reads == [None]
    summaries = {s["job"]: s["counts"] for s in json.loads(first.stdout)}
    assert summaries["organizers-north"]["created"] == 7
    assert summaries["partner-housing"]["created"] > 0
    assert len(rows(demo / "out" / "organizers-north.csv")) == 7
    history = json.loads(run(runner, "runs", "--json", cwd=demo).stdout)
    assert sorted(r["job"] for r in history) == ["organizers-north", "partner-housing"]
    again = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert again.exit_code == 0, again.output
    assert len(reads) == 2
    assert reads[1] is not None  # both at the same cursor: one incremental read


def test_run_all_loads_its_jobs_with_the_collector_out_of_the_way(
    runner: CliRunner, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading many jobs (a network's partners) makes as many objects as running them:
    `run --all` loads them as a run runs (runner.fewer_collections), then restores the
    collector."""
    import gc

    from connector_core.cli import sync as cli_sync

    thresholds = gc.get_threshold()
    during: list[int] = []
    load = cli_sync.load_job

    def spied(*args: Any, **kwargs: Any) -> Any:
        during.append(gc.get_threshold()[0])
        return load(*args, **kwargs)

    monkeypatch.setattr(cli_sync, "load_job", spied)
    result = run(runner, "run", "--all", cwd=demo, env=ENV)
    assert result.exit_code == 0, result.output
    assert len(during) == 2
    assert all(t > thresholds[0] for t in during)
    assert gc.get_threshold() == thresholds


def test_the_scheduler_runs_due_jobs_from_one_read(
    demo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from connector_core.cli.app import App
    from connector_core.cli.sync import _run_due

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    reads = count_reads(monkeypatch)
    ran = _run_due(App(demo / "connector.yaml"))
    assert sorted(ran) == ["organizers-north", "partner-housing"]  # never ran: both due
    assert reads == [None]
    out = capsys.readouterr().out
    assert "organizers-north: read" in out
    assert "partner-housing: read" in out


def test_a_worker_task_larger_than_a_group_reads_its_source_once(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker runs a task as `run --all` does: in groups that hold their locks (here two
    jobs each), every group fed from the task's one read; so `group_limit` may exceed the
    256 jobs a group holds without more reads."""
    from connector_core.cli.app import App
    from connector_core.cli.workers import CliJobRunner
    from connector_core.sync import fanout

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = demo / "connector.yaml"
    text, copies = config.read_text(encoding="utf-8"), {"north": "organizers", "housing": "partner"}
    targets = "".join(
        f"  {c}-copy:\n    adapter: csv\n    settings: {{path: out/{c}.csv}}\n" for c in copies
    )
    blocks = "".join(
        f"  {c}-copy:\n    source: members\n    target: {c}-copy\n"
        f"    policy: ../../policies/{p}-{c}.yaml\n"
        for c, p in copies.items()
    )
    text = text.replace("\njobs:\n", f"\n{targets}\njobs:\n").replace(
        "\nledger:", f"{blocks}\nledger:"
    )
    config.write_text(text, encoding="utf-8")
    monkeypatch.setattr(fanout, "_GROUP", 2)
    reads = count_reads(monkeypatch)
    runner = CliJobRunner(App(config))
    jobs = ["organizers-north", "partner-housing", "north-copy", "housing-copy"]
    with runner.store() as store:
        outcome = runner.run(store, jobs)
        assert outcome == dict.fromkeys(jobs)
        assert reads == [None]
        assert all(store.job_state(job).last_success_at is not None for job in jobs)

    def unkeyed(name: str) -> list[dict[str, str]]:  # a target key is per job
        return [{k: v for k, v in r.items() if k != "id"} for r in rows(demo / "out" / name)]

    assert unkeyed("north.csv") == unkeyed("organizers-north.csv")
    assert len(rows(demo / "out" / "organizers-north.csv")) == 7


_OPENED: list[str] = []


def _count_opens(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and isinstance(args[0], str | Path):
        _OPENED.append(str(args[0]))


sys.addaudithook(_count_opens)  # for the process: a hook cannot be removed


def _opens_of(path: Path, action: Callable[[], Any]) -> int:
    _OPENED.clear()
    action()
    return sum(Path(p).resolve() == path.resolve() for p in _OPENED if p.endswith(path.name))


def test_run_all_opens_a_shared_source_as_often_as_one_job(runner: CliRunner, demo: Path) -> None:
    """Checking the jobs' fields against the source (schema drift) lists the source's
    header once per source connection, not once per job: both demo jobs read members.csv."""
    members = demo / "data" / "members.csv"

    def run_all() -> None:
        assert run(runner, "run", "--all", cwd=demo, env=ENV).exit_code == 0

    def run_one() -> None:
        assert run(runner, "run", "organizers-north", cwd=demo, env=ENV).exit_code == 0

    every_job = _opens_of(members, run_all)
    for made in [*demo.glob("state.db*"), *demo.glob("out/*.csv"), *demo.glob("anchors.log")]:
        shutil.rmtree(made) if made.is_dir() else made.unlink()
    one_job = _opens_of(members, run_one)
    assert one_job > 0
    assert every_job == one_job
