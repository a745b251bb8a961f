"""`connector credentials`: store, delete, list and migrate the secrets connections refer to.

Every entry lives in this network's keyring namespace (the network's name in connector.yaml);
see :mod:`connector_core.credentials`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from connector_core.cli.app import App, emit_json
from connector_core.credentials import (
    LEGACY_SOURCE,
    NETWORK,
    SecretRef,
    delete_secret,
    env_var_name,
    get_secret,
    migrate_secret,
    secret_refs,
    service_name,
    set_secret,
)
from connector_core.errors import ConfigError


@click.group()
def credentials() -> None:
    """Store secrets in the OS keyring (never in connector.yaml), per network.

    Entries are kept under the network's name (`network: name:` in
    connector.yaml), so two networks on one OS account never share one.

    \b
    Example:
      connector credentials set national-crm api_key      # asks, hidden
      printf %s "$KEY" | connector credentials set national-crm api_key --force
      connector credentials list
    """


@credentials.command("set")
@click.argument("connection")
@click.argument("key")
@click.option(
    "--force",
    "--yes",
    "force",
    is_flag=True,
    help="Replace a secret already stored without asking (needed when not run in a terminal).",
)
@click.pass_obj
def set_cmd(app: App, connection: str, key: str, force: bool) -> None:
    """Store the secret KEY of CONNECTION (or `network`), read from a hidden prompt or stdin.

    A secret already stored is replaced only after you confirm, or with --force.
    """
    network = _network(app, connection)
    interactive = sys.stdin.isatty()
    if not force and get_secret(network, connection, key) is not None:
        where = f"{service_name(network, connection)} {key}"
        if not interactive:
            raise ConfigError(
                f"the keyring already holds {key} for {connection} ({where}); not replaced",
                hint="Pass --force to replace it.",
            )
        question = f"{key} for {connection} is already stored; replace it?"
        click.confirm(question, abort=True, err=True)
    if interactive:
        value = click.prompt(
            f"{key} for {connection}", hide_input=True, confirmation_prompt=True, err=True
        )
    else:
        value = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    set_secret(network, connection, key, value)
    click.echo(f"stored {key} for {connection} in the keyring ({network})", err=True)


@credentials.command("delete")
@click.argument("connection")
@click.argument("key")
@click.pass_obj
def delete_cmd(app: App, connection: str, key: str) -> None:
    """Remove the secret KEY of CONNECTION from this network's keyring entries."""
    network = _network(app, connection)
    if not delete_secret(network, connection, key):
        raise ConfigError(
            f"the keyring holds no {key} for {connection} ({service_name(network, connection)})",
            hint="`connector credentials list` shows what is stored.",
        )
    click.echo(f"deleted {key} for {connection}", err=True)


@credentials.command("list")
@click.argument("connection", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_cmd(app: App, connection: str | None, as_json: bool) -> None:
    """List every secret connector.yaml refers to, where it is found and whether it
    resolves (never the values).

    The network's own secrets (`network: hash_key`, `ledger_key`, `key_secret`) are listed
    under the name `network`.
    """
    rows = [_status(app, name, setting, ref) for name, setting, ref in _references(app, connection)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no connection refers to a secret", err=True)
    for row in rows:
        click.echo(f"{row['connection']}  {row['setting']}  {row['source']}  {row['status']}")


@credentials.command("migrate")
@click.option(
    "--remove-old",
    is_flag=True,
    help="Also delete the old shared entries once copied (only when no other network on "
    "this OS account still reads them).",
)
@click.pass_obj
def migrate_cmd(app: App, remove_old: bool) -> None:
    """Copy the secrets stored before network namespacing into this network's entries.

    Releases before namespacing kept entries under `commons-connector:CONNECTION`,
    shared by every network on the OS account; they are still read, with a warning.
    This copies each one connector.yaml refers to, unless the network has its own.
    """
    network = app.config.model.network.name
    for name, _setting, ref in _references(app, None):
        if ref.secret is None:
            continue
        if migrate_secret(network, name, ref.secret):
            click.echo(f"copied {name} {ref.secret} into {service_name(network, name)}", err=True)
        own = get_secret(network, name, ref.secret) is not None
        if remove_old and own and delete_secret(network, name, ref.secret, legacy=True):
            click.echo(f"deleted the old shared entry of {name} {ref.secret}", err=True)
    click.echo("done; `connector credentials list` shows where each secret is found", err=True)


def _network(app: App, connection: str) -> str:
    """The network's name, after checking that `connection` is one of its connections."""
    if connection != NETWORK:
        app.config.connection(connection)  # unknown name: a clear error with did-you-mean
    return app.config.model.network.name


def _references(app: App, connection: str | None) -> list[tuple[str, str, SecretRef]]:
    """(connection, setting, ref) of every secret connector.yaml refers to (of `connection`)."""
    config = app.config
    if connection not in (None, NETWORK):
        config.connection(connection)
    names = [] if connection == NETWORK else [connection] if connection else sorted(config.settings)
    found = [(n, setting, ref) for n in names for setting, ref in secret_refs(config.settings[n])]
    if connection in (None, NETWORK):
        found += [(NETWORK, setting, ref) for setting, ref in secret_refs(config.model.network)]
        if config.model.notifications is not None:
            found += [(NETWORK, s, ref) for s, ref in config.model.notifications.secret_refs()]
    return found


def _status(app: App, connection: str, setting: str, ref: SecretRef) -> dict[str, Any]:
    row: dict[str, Any] = {"connection": connection, "setting": setting}
    if ref.env is not None:
        return row | {"source": f"env {ref.env}", "status": _set(bool(os.environ.get(ref.env)))}
    assert ref.secret is not None
    found = app.config.secrets(connection).lookup(ref.secret)
    status = _set(found.value is not None)
    if found.value is None and found.failure:
        status += f" ({found.failure})"
    elif found.source == LEGACY_SOURCE:
        status += " (run `connector credentials migrate`)"
    variable = env_var_name(connection, ref.secret)
    if found.source.startswith("keyring") and os.environ.get(variable):
        status += f" ({variable} is set too and not used: the keyring comes first)"
    keyring = f"keyring {ref.secret}"
    source = found.source.replace("keyring", keyring, 1) if found.source else keyring
    return row | {"source": source, "status": status}


def _set(present: bool) -> str:
    return "set" if present else "missing"
