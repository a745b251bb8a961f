"""Core commands: plugins, adapters, schema, read. Each parses, calls the engine and renders.

The top-level group imports these on use (:data:`connector_core.cli.app.COMMANDS`).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import click

from connector_core.adapters import Page
from connector_core.cli.app import App, emit_json, output_option, write_json
from connector_core.cli.lazy import Lazy, LazyGroup
from connector_core.cli.render import cell, table
from connector_core.config import config_json_schema
from connector_core.records import FIELDS, Record

log = logging.getLogger("connector.cli")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "show_all", is_flag=True, help="Include plugins that failed to load.")
@click.pass_obj
def plugins(app: App, as_json: bool, show_all: bool) -> None:
    """List installed plugins, their distributions and the hooks they implement."""
    pm = app.pm
    rows = []
    for name, info in sorted(pm.infos.items()):
        plugin = pm.get_plugin(name)
        hooks = sorted(c.name for c in (pm.get_hookcallers(plugin) or []))
        rows.append({**info.as_dict(), "hooks": hooks})
    failed = [f.as_dict() for f in pm.failures]
    if as_json:
        emit_json(rows + failed if show_all else rows)
        return
    click.echo(
        table(
            [
                [r["name"], r["distribution"] or "-", r["version"] or "-", ", ".join(r["hooks"])]
                for r in rows
            ],
            ["plugin", "distribution", "version", "hooks"],
        )
    )
    for failure in pm.failures:
        click.secho(
            f"plugin {failure.name} ({failure.distribution}) failed to load: {failure.error}",
            fg="yellow",
            err=True,
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def adapters(app: App, as_json: bool) -> None:
    """List the adapters the installed plugins provide, with their capabilities."""
    found = [cls.describe() for cls in app.adapters.values()]
    if as_json:
        emit_json(found)
        return
    click.echo(
        table(
            [[a["name"], ", ".join(a["capabilities"]), a["description"]] for a in found],
            ["adapter", "capabilities", "description"],
        )
    )


#: `schema policy` lives with the policy commands, imported only when it runs.
SCHEMA_COMMANDS = {
    "policy": Lazy(
        "connector_core.cli.policy:schema_policy",
        "The JSON Schema of policy files, with the masks of the installed plugins.",
    ),
}


@click.group(cls=LazyGroup, lazy=SCHEMA_COMMANDS)
def schema() -> None:
    """Print JSON Schemas that editors use to check and complete your YAML."""


@schema.command("config")
@output_option
@click.pass_obj
def schema_config(app: App, output: Path | None) -> None:
    """The JSON Schema of connector.yaml for the installed adapters.

    \b
    Example (then add `# yaml-language-server: $schema=connector.schema.json`):
      connector schema config -o connector.schema.json
    """
    write_json(config_json_schema(app.adapters), output)


@click.command()
@click.argument("connection")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Stop after this many records (0: all).",
)
@click.option("--fields", help="Comma-separated canonical fields to show (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per record.")
@click.pass_obj
def read(app: App, connection: str, limit: int, fields: str | None, as_json: bool) -> None:
    """Print records of CONNECTION as the engine reads them, before any policy.

    This shows your own source data unfiltered; it is for checking a connection and its
    mapping, not for sharing.
    """
    wanted = frozenset(f.strip() for f in fields.split(",")) if fields else None
    with app.config.open_adapter(connection) as adapter:
        records = _records(adapter.read(cursor=None, fields=wanted, where=None))
        shown = list(itertools.islice(records, limit or None))
    if as_json:
        for record in shown:
            click.echo(json.dumps(record, ensure_ascii=False, default=str))
        return
    columns = sorted({k for r in shown for k in r}, key=_column_order)
    click.echo(table([[cell(r.get(c)) for c in columns] for r in shown], columns))
    click.echo(f"{len(shown)} record(s) shown", err=True)


def _records(pages: Iterator[Page]) -> Iterator[Record]:
    for page in pages:
        for problem in page.problems:
            click.secho(f"skipped: {problem}", fg="yellow", err=True)
        yield from page.records


_ORDER = {name: i for i, name in enumerate(FIELDS)}


def _column_order(name: str) -> tuple[int, str]:
    return (_ORDER.get(name, len(_ORDER)), name)
