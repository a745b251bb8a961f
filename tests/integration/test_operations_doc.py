"""docs/operations.md is true to the code: every `$ connector` line in it runs on the demo
network, and the mass-delete guard's example prints what the guide shows."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.test_cli import run

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}


def without(text: str, heading: str) -> tuple[str, str]:
    """`text` without its section `heading` (up to the next ``## ``), and that section."""
    before, after = text.split(f"## {heading}\n", 1)
    section, _, rest = after.partition("\n## ")
    return before + ("## " + rest if rest else ""), section


def console_blocks(section: str | None = None) -> list[list[str]]:
    """The console examples, but the ledger section's (run in order, anchors and all, by
    tests/integration/test_ledger_cli.py) and the workers' (they need a broker: tested
    below); or those of `section` only."""
    text = DOC.read_text(encoding="utf-8")
    text, _ = without(text, "The ledger")
    text, workers = without(text, "Workers")
    if section == "Workers":
        text = workers
    return [b.splitlines() for b in re.findall(r"```console\n(.*?)```", text, re.S)]


def commands(section: str | None = None) -> list[list[str]]:
    found = []
    for block in console_blocks(section):
        for line in block:
            if line.startswith("$ connector "):
                found.append(shlex.split(line.removeprefix("$ connector "), comments=True))
    return found


@pytest.mark.parametrize("args", commands(), ids=" ".join)
def test_every_documented_command_runs_on_the_demo(
    runner: CliRunner, demo: Path, args: list[str]
) -> None:
    run(runner, "run", "--all", cwd=demo, env=ENV)
    result = run(runner, *args, cwd=demo, env=ENV)
    assert result.exit_code in (0, 1), result.output  # never a usage error or a crash
    assert "Traceback" not in result.output


def test_the_guard_example_is_what_a_run_prints(runner: CliRunner, demo: Path) -> None:
    (block,) = [b for b in console_blocks() if "hint: check them" in "\n".join(b)]
    shown = [line for line in block if not line.startswith("$") and not line.isdigit()]
    run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    members = demo / "data" / "members.csv"
    members.write_text(members.read_text(encoding="utf-8").splitlines()[0] + "\n")
    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert str(result.exit_code) in block
    printed = [
        re.sub(r"^(ledger anchor \d+:)[0-9a-f]{32,64} appended to .*/", r"\1… appended to ", line)
        for line in result.stdout.splitlines() + result.stderr.splitlines()
    ]
    assert sorted(printed) == sorted(shown)  # stdout and stderr interleave on a terminal


def _worker_section() -> str:
    return without(DOC.read_text(encoding="utf-8"), "Workers")[1]


WORKER_UNIT = "connector-worker@.service"


def worker_unit() -> str:
    """The systemd unit of the Workers section."""
    (unit,) = [b for b in re.findall(r"```ini\n(.*?)```", _worker_section(), re.S) if "worker" in b]
    return unit


@pytest.fixture
def no_op(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, object]]]:
    """The commands that stay up (worker, schedule) parse their options and return."""
    from connector_core.cli.sync import schedule
    from connector_core.cli.workers import worker

    called: list[tuple[str, dict[str, object]]] = []
    for command in (worker, schedule):
        name = command.name or ""
        monkeypatch.setattr(command, "callback", lambda *_a, _n=name, **kw: called.append((_n, kw)))
    return called


def queue_network(demo: Path) -> Path:
    """The demo network with a queue on the machine's Redis."""
    from tests.brokers import machine_redis

    config = demo / "connector.yaml"
    with config.open("a", encoding="utf-8") as out:
        out.write(f"\nqueue:\n  broker: {machine_redis()}\n  queue: doc-test\n")
    return demo


@pytest.mark.parametrize("args", commands("Workers"), ids=" ".join)
@pytest.mark.usefixtures("no_op")
def test_every_documented_worker_command_runs(
    runner: CliRunner, demo: Path, args: list[str]
) -> None:
    result = run(runner, *args, cwd=queue_network(demo), env=ENV)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def test_the_worker_unit_is_valid(
    tmp_path: Path, runner: CliRunner, demo: Path, no_op: list[tuple[str, dict[str, object]]]
) -> None:
    """systemd-analyze accepts the unit (with this checkout's connector), and its command
    line parses as the CLI's."""
    verify = shutil.which("systemd-analyze")
    assert verify is not None, "systemd-analyze is missing (systemd)"
    unit = worker_unit()
    connector = Path(sys.executable).parent / "connector"
    (tmp_path / WORKER_UNIT).write_text(
        unit.replace("/srv/connector/.venv/bin/connector", str(connector)), encoding="utf-8"
    )
    checked = subprocess.run(
        [verify, "verify", f"./{WORKER_UNIT.replace('@', '@1')}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stderr
    (line,) = [li for li in unit.splitlines() if li.startswith("ExecStart=")]
    args = shlex.split(line.split(" ", 1)[1].replace("%i", "1").replace("%H", "host"))
    result = run(runner, *args, cwd=queue_network(demo), env=ENV)
    assert result.exit_code == 0, result.output
    assert no_op == [("worker", {"concurrency": 2, "hostname": "connector-1@host"})]
