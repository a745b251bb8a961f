"""The click group, its global options, the App object, and the one place errors become exits."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from connector_core.cli.lazy import Lazy, LazyGroup
from connector_core.errors import ConfigValidationError, ConnectorError
from connector_core.files import write_output
from connector_core.logs import configure
from connector_core.plugins import Adapters, ConnectorPluginManager, make_plugin_manager
from connector_core.scrub import scrub, scrubbed_streams

if TYPE_CHECKING:
    from connector_core.config import Config


class App:
    """What every command needs, built lazily: plugins, adapters, the loaded config."""

    def __init__(self, config_path: Path | None = None, disabled: tuple[str, ...] = ()) -> None:
        self.config_path = config_path
        self.disabled = disabled

    @functools.cached_property
    def pm(self) -> ConnectorPluginManager:
        """The plugin manager (entry points minus disabled plugins)."""
        return make_plugin_manager(blocked=self.disabled)

    @functools.cached_property
    def adapters(self) -> Adapters:
        """Installed adapters by name, imported as they are looked up (see :class:`Adapters`)."""
        return Adapters(self.pm)

    @functools.cached_property
    def config(self) -> Config:
        """connector.yaml, validated against the installed adapters."""
        from connector_core.config import find_config, load_config  # pydantic: on use

        return load_config(find_config(self.config_path), self.adapters)


def report_error(err: ConnectorError) -> None:
    """Print an error and its hint on stderr, one problem per line (scrubbed, as all output)."""
    if isinstance(err, ConfigValidationError):
        for problem in err.problems:
            click.secho(f"{problem.severity}: {problem}", fg="red", err=True)
    else:
        click.secho(f"Error: {err}", fg="red", err=True)
    if err.hint:
        click.echo(f"Hint: {err.hint}", err=True)


#: The built-in commands, imported when used (`connector --help` imports none of them).
COMMANDS = {
    "approvals": Lazy(
        "connector_core.cli.approvals:approvals",
        "Review, approve and deny the change sets held for approval.",
    ),
    "adapters": Lazy(
        "connector_core.cli.commands:adapters",
        "List the adapters the installed plugins provide, with their capabilities.",
    ),
    "credentials": Lazy(
        "connector_core.cli.credentials:credentials",
        "Store secrets in the OS keyring (never in connector.yaml), per network.",
    ),
    "doctor": Lazy(
        "connector_core.cli.doctor:doctor",
        "Check the config, plugins, credentials, each connection and each job; list problems.",
    ),
    "jobs": Lazy(
        "connector_core.cli.jobs:jobs",
        "List the jobs: hand-written ones and one per partner of each job template.",
    ),
    "ledger": Lazy(
        "connector_core.cli.ledger:ledger",
        "Check, export and migrate the tamper-evident ledger of every share.",
    ),
    "plan": Lazy(
        "connector_core.cli.sync:plan",
        "Show the changes a run of JOB would make, as the recipient would see them.",
    ),
    "plugins": Lazy(
        "connector_core.cli.commands:plugins",
        "List installed plugins, their distributions and the hooks they implement.",
    ),
    "policy": Lazy(
        "connector_core.cli.policy:policy", "Check, test, explain and preview sharing policies."
    ),
    "read": Lazy(
        "connector_core.cli.commands:read",
        "Print records of CONNECTION as the engine reads them, before any policy.",
    ),
    "run": Lazy(
        "connector_core.cli.sync:run",
        "Run the sync job JOB (or --all, or --due) defined in connector.yaml.",
    ),
    "runs": Lazy(
        "connector_core.cli.sync:runs",
        "List recent runs (of JOB, or of every job) with their outcome and counts.",
    ),
    "schedule": Lazy(
        "connector_core.cli.sync:schedule",
        "Stay running and run each job when its cron schedule says it is due.",
    ),
    "schema": Lazy(
        "connector_core.cli.commands:schema",
        "Print JSON Schemas that editors use to check and complete your YAML.",
    ),
    "status": Lazy(
        "connector_core.cli.sync:status",
        "Show each job's last run and the changes it still owes its target, and why.",
    ),
    "requests": Lazy(
        "connector_core.cli.requests:requests",
        "Receive, review, decide and revoke share requests from other groups.",
    ),
    "worker": Lazy(
        "connector_core.cli.workers:worker",
        "Take jobs from the queue (`queue:` in connector.yaml) and run them, until stopped.",
    ),
    "who-has": Lazy(
        "connector_core.cli.sync:who_has",
        "List every target that currently holds the person with source id RECORD, and why.",
    ),
}


class ConnectorGroup(LazyGroup):
    """The top-level group: built-in commands imported on use, plugin commands added through
    the ``register_commands`` hook, and :class:`ConnectorError` turned into an exit code.

    Plugins are loaded for their commands only when a name is not a built-in command, or
    when the list of commands is asked for (`connector --help`, shell completion).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, lazy=COMMANDS, **kwargs)
        self.blocked: tuple[str, ...] = ()
        self.plugin_commands: dict[str, click.Command] | None = None

    def reset(self, blocked: Sequence[str]) -> None:
        """Forget the plugin commands found so far; find them again without `blocked`."""
        for name in self.plugin_commands or {}:
            self.commands.pop(name, None)
        self.blocked = tuple(blocked)
        self.plugin_commands = None

    def load_plugin_commands(self) -> dict[str, click.Command]:
        """The commands plugins add (once); a built-in command's name stays the built-in's."""
        if self.plugin_commands is None:
            found = click.Group()
            try:
                pm = make_plugin_manager(blocked=self.blocked)
            except Exception:  # the command that needs plugins reports why they failed
                pm = None
            if pm is not None:
                pm.hook.register_commands(cli=found)
            self.plugin_commands = {
                name: command for name, command in found.commands.items() if name not in self.lazy
            }
            self.commands.update(self.plugin_commands)
        return self.plugin_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in and plugin commands (this loads the plugins, not the built-ins)."""
        self.load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, or else a plugin's."""
        if cmd_name not in self.lazy and cmd_name not in self.commands:
            self.load_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; map our errors to DESIGN §10 exit codes, never a traceback."""
        try:
            return super().invoke(ctx)
        except ConnectorError as err:
            report_error(err)
            ctx.exit(err.exit_code)


def emit_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


#: ``-o/--output FILE`` for commands that print a document (schemas, the ledger).
output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)


def write_json(data: Any, output: Path | None) -> None:
    """Write data as JSON to a file (reporting it on stderr), or to stdout."""
    if output is None:
        emit_json(data)
        return
    text = scrub(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    write_output(output, lambda out: out.write(text))
    click.echo(f"wrote {output}", err=True)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from connector_core import __version__  # importlib.metadata's search: only when asked

    click.echo(f"connector, version {__version__}")
    ctx.exit()


@click.group(cls=ConnectorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="CONNECTOR_CONFIG",
    help="connector.yaml to use (default: ./connector.yaml, or $CONNECTOR_CONFIG).",
)
@click.option(
    "--disable-plugin",
    "disabled",
    multiple=True,
    metavar="NAME",
    help="Do not load the plugin NAME (repeatable; also $CONNECTOR_DISABLE_PLUGINS).",
)
@click.option("-v", "--verbose", count=True, help="Log more (debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines for humans or JSON for log collectors.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: Path | None,
    disabled: tuple[str, ...],
    verbose: int,
    quiet: bool,
    log_format: str,
) -> None:
    """Share people's data between your organizations' tools, under consent and policy.

    Every command reads ./connector.yaml unless given --config.
    """
    # Everything the command prints, its log lines included, leaves through the scrubber.
    ctx.with_resource(scrubbed_streams())
    configure(verbose=verbose, quiet=quiet, fmt=log_format)
    ctx.obj = App(config_path, disabled)
