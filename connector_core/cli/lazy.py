"""Click groups whose commands are imported on use, so `connector --help` stays instant.

A command's module (and what it imports: SQLAlchemy, the policy compiler, keyring, …) is
imported only when that command runs or its own help is asked for. The group's help lists
the commands from a table of one-line summaries; a test checks every summary against the
command's real help, so the two cannot drift apart.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import click


class Lazy(NamedTuple):
    """Where a command lives (``module:attribute``) and its help's first line."""

    target: str
    summary: str


def load(target: str) -> click.Command:
    """Import ``module:attribute`` and return the click command found there."""
    module_name, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


class LazyGroup(click.Group):
    """A group with commands given as :class:`Lazy` entries, imported on first use."""

    def __init__(self, *args: Any, lazy: Mapping[str, Lazy] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Lazy] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, without importing any."""
        return sorted({*self.lazy, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command `cmd_name`, importing its module the first time."""
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return None
        command = load(entry.target)
        self.add_command(command, cmd_name)
        return command

    def listed(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """What the help lists for `cmd_name`: the command if loaded, else a stand-in."""
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return self.get_command(ctx, cmd_name)
        return click.Command(cmd_name, help=entry.summary)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's own listing, from the summaries instead of the imported commands."""
        commands = []
        for name in self.list_commands(ctx):
            command = self.listed(ctx, name)
            if command is not None and not command.hidden:
                commands.append((name, command))
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            rows = [(name, command.get_short_help_str(limit)) for name, command in commands]
            with formatter.section("Commands"):
                formatter.write_dl(rows)
