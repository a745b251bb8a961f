"""Meta-tests: hooks documented, commands helpful, public API sorted, docs true to the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click
import pytest

import connector_core
from connector_core import hookspecs
from connector_core.cli import build_cli

REPO = Path(__file__).resolve().parent.parent
HOOKS = [
    name for name, obj in vars(hookspecs).items() if name.startswith("register_") and callable(obj)
]


def test_all_is_complete() -> None:
    # ruff (RUF022) keeps __all__ sorted; this checks every name really exists.
    assert len(set(connector_core.__all__)) == len(connector_core.__all__)
    for name in connector_core.__all__:
        assert hasattr(connector_core, name), name


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    sig = inspect.signature(getattr(hookspecs, hook))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    heading = f"## {hook}({params}) -> {sig.return_annotation}"
    assert heading in (REPO / "docs" / "hooks.md").read_text(encoding="utf-8")


def test_docs_document_no_hook_that_does_not_exist() -> None:
    documented = re.findall(r"^## (\w+)\(", (REPO / "docs" / "hooks.md").read_text(), re.M)
    assert sorted(documented) == sorted(HOOKS)


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    # list_commands/get_command, as click does: the groups import their commands on use.
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix}{name} "))
    return found


@pytest.mark.parametrize(
    ("name", "command"), _commands(build_cli([])), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_has_help(name: str, command: click.Command) -> None:
    assert command.help, f"`connector {name}` has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"`connector {name}` option {param.opts} has no help"


def test_every_command_is_in_the_admin_guide() -> None:
    guide = (REPO / "docs" / "admin-guide.md").read_text(encoding="utf-8")
    for name, _command in _commands(build_cli([])):
        assert f"connector {name}" in guide, f"docs/admin-guide.md does not mention {name}"
