"""The click group, its global options, the App object, and the one place errors become exits."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import click

from connector_core import __version__
from connector_core.adapters import Adapter
from connector_core.config import Config, find_config, load_config
from connector_core.errors import ConfigValidationError, ConnectorError
from connector_core.files import write_output
from connector_core.logs import configure
from connector_core.plugins import ConnectorPluginManager, collect_adapters, make_plugin_manager
from connector_core.scrub import scrub, scrubbed_streams


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
    def adapters(self) -> dict[str, type[Adapter]]:
        """Installed adapters by name."""
        return collect_adapters(self.pm)

    @functools.cached_property
    def config(self) -> Config:
        """connector.yaml, validated against the installed adapters."""
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


class ConnectorGroup(click.Group):
    """A click group that turns :class:`ConnectorError` into a message and an exit code."""

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


@click.group(cls=ConnectorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="connector")
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
