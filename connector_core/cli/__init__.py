"""The ``connector`` command: a thin shell that parses, calls the engine and renders."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from connector_core.cli.app import App, ConnectorGroup, cli
from connector_core.scrub import scrub_excepthook

__all__ = ["App", "build_cli", "cli", "main"]


def _disabled_from_argv(argv: Sequence[str]) -> list[str]:
    """`--disable-plugin` values, read before click parses so plugin commands can be skipped."""
    names: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--disable-plugin" and i + 1 < len(argv):
            names.append(argv[i + 1])
        elif arg.startswith("--disable-plugin="):
            names.append(arg.split("=", 1)[1])
    return names


def build_cli(argv: Sequence[str]) -> click.Group:
    """The command group: core commands, and those plugins add via ``register_commands``.

    Nothing is imported here: each core command's module when it runs, the plugins when a
    name is not a core command or the list of commands is shown.
    """
    group = cli
    assert isinstance(group, ConnectorGroup)
    group.reset(blocked=_disabled_from_argv(argv))
    return group


def main(argv: Sequence[str] | None = None) -> Any:
    """Console entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    sys.excepthook = scrub_excepthook  # an internal error's traceback, scrubbed of secrets
    return build_cli(args).main(args=args, prog_name="connector")
