"""`connector credentials`: store, delete and list the secrets connections refer to."""

from __future__ import annotations

import os
import sys

import click

from connector_core.cli.app import App, emit_json
from connector_core.credentials import (
    delete_secret,
    env_var_name,
    get_secret,
    secret_refs,
    set_secret,
)
from connector_core.errors import ConfigError

NETWORK = "network"  # the keyring "connection" of network-wide secrets (network: in the YAML)


@click.group()
def credentials() -> None:
    """Store secrets in the OS keyring (never in connector.yaml).

    \b
    Example:
      connector credentials set national-crm api_key      # asks, hidden
      printf %s "$KEY" | connector credentials set national-crm api_key
    """


@credentials.command("set")
@click.argument("connection")
@click.argument("key")
def set_cmd(connection: str, key: str) -> None:
    """Store the secret KEY of CONNECTION, read from a hidden prompt or from stdin."""
    if sys.stdin.isatty():
        value = click.prompt(
            f"{key} for {connection}", hide_input=True, confirmation_prompt=True, err=True
        )
    else:
        value = sys.stdin.read().rstrip("\r\n")
    set_secret(connection, key, value)
    click.echo(f"stored {key} for {connection} in the keyring", err=True)


@credentials.command("delete")
@click.argument("connection")
@click.argument("key")
def delete_cmd(connection: str, key: str) -> None:
    """Remove the secret KEY of CONNECTION from the keyring."""
    if not delete_secret(connection, key):
        raise ConfigError(
            f"the keyring holds no {key} for {connection}",
            hint="`connector credentials list` shows what is stored.",
        )
    click.echo(f"deleted {key} for {connection}", err=True)


@credentials.command("list")
@click.argument("connection", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_cmd(app: App, connection: str | None, as_json: bool) -> None:
    """List the secrets connector.yaml refers to and whether each is set (never the values).

    The network's own secrets (`network: hash_key`, `network: ledger_key`) are listed under
    the name `network`.
    """
    config = app.config
    network = connection in (None, NETWORK)  # the network's own secrets: hash_key, ledger_key
    names = [] if connection == NETWORK else [connection] if connection else sorted(config.settings)
    rows = []
    for name in names:
        config.connection(name)  # unknown name: a clear error with did-you-mean
        for setting, ref in secret_refs(config.settings[name]):
            rows.append(
                {"connection": name, "setting": setting, **_status(name, ref.secret, ref.env)}
            )
    for setting, ref in secret_refs(config.model.network) if network else []:
        rows.append(
            {"connection": NETWORK, "setting": setting, **_status(NETWORK, ref.secret, ref.env)}
        )
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no connection refers to a secret", err=True)
    for row in rows:
        click.echo(f"{row['connection']}  {row['setting']}  {row['source']}  {row['status']}")


def _status(connection: str, key: str | None, env: str | None) -> dict[str, str]:
    if env is not None:
        return {"source": f"env {env}", "status": "set" if os.environ.get(env) else "missing"}
    assert key is not None
    if get_secret(connection, key):
        return {"source": f"keyring {key}", "status": "set"}
    fallback = env_var_name(connection, key)
    if os.environ.get(fallback):
        return {"source": f"env {fallback}", "status": "set"}
    return {"source": f"keyring {key}", "status": "missing"}
