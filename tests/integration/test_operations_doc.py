"""docs/operations.md is true to the code: every `$ connector` line in it runs on the demo
network, and the mass-delete guard's example prints what the guide shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.test_cli import run

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}


def console_blocks() -> list[list[str]]:
    """The console examples, but the ledger section's (run in order, anchors and all, by
    tests/integration/test_ledger_cli.py)."""
    text = DOC.read_text(encoding="utf-8")
    before, after = text.split("## The ledger\n", 1)
    text = before + after.split("\n## ", 1)[1] if "\n## " in after else before
    return [b.splitlines() for b in re.findall(r"```console\n(.*?)```", text, re.S)]


def commands() -> list[list[str]]:
    found = []
    for block in console_blocks():
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
        re.sub(r"^(ledger anchor \d+:)[0-9a-f]{64} appended to .*/", r"\1… appended to ", line)
        for line in result.stdout.splitlines() + result.stderr.splitlines()
    ]
    assert sorted(printed) == sorted(shown)  # stdout and stderr interleave on a terminal
