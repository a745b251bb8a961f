"""`connector ledger verify|export|migrate`, the ledger key and the anchor file.

The ledger key is the network secret ``network.ledger_key`` (default ``{secret: ledger_key}``,
keyring service ``commons-connector:<network name>:network`` or
``CONNECTOR_SECRET_NETWORK_LEDGER_KEY``). A run
on a ledger never written with a key generates one into the keyring, as ``ssh-keygen`` or
``borg init`` would, and says to back it up; on a ledger already keyed a missing key is a
configuration error, because a new key could never verify the old rows.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from connector_core.cli.app import App, output_option
from connector_core.credentials import NETWORK, env_var_name, service_name, set_secret
from connector_core.errors import ConfigError, SecretMissing
from connector_core.files import write_output
from connector_core.sync import ledger as ledger_rows
from connector_core.sync.state import StateStore

_ANCHOR_TIMEOUT = 60  # seconds an anchor command may take


@contextmanager
def open_store(
    app: App, *, keyed: bool = False, create_key: bool = False, read_only: bool = False
) -> Iterator[StateStore]:
    """The state store named in connector.yaml, closed afterwards; with the ledger key when
    `keyed` (generated into the keyring for a ledger never keyed, when `create_key`).

    `read_only` (plans, dry runs): a SQLite file that does not exist yet is not created;
    an empty store in memory stands in for it."""
    url = app.config.model.state.url
    if read_only and _missing_sqlite_file(url):
        url = "sqlite://"
    store = StateStore.open(url)
    try:
        if keyed:
            store.set_ledger_key(ledger_key(app, store, create=create_key))
        yield store
    finally:
        store.close()


def _missing_sqlite_file(url: str) -> bool:
    if not url.startswith("sqlite:///"):
        return False
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return bool(path) and path != ":memory:" and not Path(path).exists()


def ledger_key(app: App, store: StateStore, *, create: bool) -> bytes:
    """The network's ledger key; generated and stored in the keyring when `create` and the
    ledger was never written with a key; otherwise a missing key is a ConfigError."""
    ref = app.config.model.network.ledger_key
    keyed = store.ledger_keyed()
    # A ledger never keyed gets a key of its own: never another network's old shared entry.
    lookup = app.config.secrets(legacy=keyed)
    try:
        return lookup.resolve(ref).get_secret_value().encode("utf-8")
    except SecretMissing as err:
        if keyed:
            raise ConfigError(
                f"this ledger is written with a ledger key, and {_where(app, ref.secret, ref.env)} "
                "holds none here",
                hint=f"Copy the network's ledger key from where it was first stored: {err.hint} "
                "Never generate a new key for an existing ledger: its rows would not verify.",
            ) from None
        if not create or ref.secret is None:
            raise
    key = secrets.token_urlsafe(32)
    network = app.config.model.network.name
    set_secret(network, NETWORK, ref.secret, key)
    click.echo(
        f"generated a ledger key and stored it in the keyring ({service_name(network, NETWORK)} "
        f"{ref.secret}); back it up: without it the ledger cannot be verified",
        err=True,
    )
    return key.encode("utf-8")


def _where(app: App, secret: str | None, env: str | None) -> str:
    if env is not None:
        return f"the variable {env}"
    assert secret is not None
    variable = env_var_name(NETWORK, secret)
    service = service_name(app.config.model.network.name, NETWORK)
    return f"neither the keyring ({service} {secret}) nor {variable}"


def check_recording(app: App, store: StateStore) -> None:
    """What every command that may write to a target checks first: the ledger takes rows
    (:meth:`StateStore.check_ledger_writable`), and the store is not a new one standing in
    for a lost one (:func:`against_anchors`); one restored from an older backup is said."""
    store.check_ledger_writable()
    lost, behind = against_anchors(app, lambda: store.ledger_anchor()[0], store.url)
    if lost is not None:
        raise lost
    if behind is not None:
        click.secho(f"warning: {behind}", fg="yellow", err=True)


def against_anchors(
    app: App, head: Callable[[], int], url: str
) -> tuple[ConfigError | None, str | None]:
    """The state store against the newest anchor of connector.yaml's anchor file (`head`:
    the seq of the store's last ledger row): the error of a store that lost the ledger the
    file records, or the warning for one restored from a backup older than it; (None, None)
    when neither, or no anchor file records a row.

    A store rebuilt from nothing (deleted, emptied, or another URL) would make every job's
    next run a first run: everyone written again under the new store's target keys, and
    the records the old store wrote never updated or taken back - a later withdrawal would
    not reach them. The anchor file, kept outside the store, is the evidence. A store
    restored from a backup holds the rows up to its backup, so it runs; what was shared
    after the backup it does not know, which its first run says (once: that run's anchor
    is the newest then)."""
    path = app.config.model.ledger.anchors
    newest = None if path is None else ledger_rows.last_anchor(path)
    if newest is None or newest[0] == 0:
        return None, None
    seq = head()
    if seq >= newest[0]:
        return None, None
    if seq > 0:
        return None, (
            f"the state store's ledger ends at seq {seq}, but {path} records seq {newest[0]}: "
            "the store was restored from an older backup. It does not know what was shared "
            "after the backup: a record shared then and withdrawn or deleted since stays in "
            "its target, so check the targets by hand (docs/operations.md, 'A lost store')"
        )
    return ConfigError(
        f"the state store at {url} holds no ledger rows, but {path} records the network's "
        f"ledger up to seq {newest[0]}: the store was lost, emptied or replaced, and the "
        "targets hold records only the old store knows",
        hint="Restore the state store from its backup: a run now would write everyone "
        "again under new target keys and never take the old records back. To start over "
        "on purpose, empty every target by hand, then move the anchor file aside.",
    ), None


def export_anchor(app: App, store: StateStore, *, quiet: bool) -> None:
    """Append the ledger head to the anchor file of connector.yaml, and hand it to its
    anchor command, where it names them."""
    settings = app.config.model.ledger
    path = settings.anchors
    if path is None and settings.anchor_command is None:
        return
    seq, digest = store.ledger_anchor()
    if settings.anchor_command is not None:
        at = ledger_rows.timestamp(dt.datetime.now(dt.UTC))
        _anchor_command(settings.anchor_command, f"{at} {ledger_rows.format_anchor(seq, digest)}")
    if path is None:
        return
    try:
        line = ledger_rows.export_anchor(path, seq, digest)
    except OSError as exc:
        raise ConfigError(
            f"cannot append the ledger anchor to {path}: {exc.strerror}",
            hint="Check `ledger: anchors:` in connector.yaml and the folder's permissions.",
        ) from None
    if not quiet:
        click.echo(f"ledger anchor {line.split()[-1]} appended to {path}", err=True)


def _anchor_command(argv: list[str], line: str) -> None:
    """Run `argv` with the anchor `line` on stdin; a failure is a ConfigError naming it."""
    hint = "Check `ledger: anchor_command:` in connector.yaml; the anchor was not sent."
    try:
        done = subprocess.run(
            argv,
            input=line + "\n",
            text=True,
            capture_output=True,
            timeout=_ANCHOR_TIMEOUT,
            env={**os.environ, "CONNECTOR_LEDGER_ANCHOR": line.split()[-1]},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = (
            f"it did not finish in {_ANCHOR_TIMEOUT} s"
            if isinstance(exc, subprocess.TimeoutExpired)
            else str(exc.strerror or exc)
        )
        raise ConfigError(
            f"the ledger anchor command {argv[0]!r} failed: {reason}", hint=hint
        ) from None
    if done.returncode != 0:
        raise ConfigError(
            f"the ledger anchor command {argv[0]!r} exited with status {done.returncode}",
            hint=hint,
        )


@click.group()
def ledger() -> None:
    """Check, export and migrate the tamper-evident ledger of every share."""


def _expected(app: App, expect: tuple[str, ...], anchors: Path | None) -> list[tuple[int, str]]:
    found = []
    for text in expect:
        try:
            found.append(ledger_rows.parse_anchor(text))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expect") from None
    configured = app.config.model.ledger.anchors
    if anchors is None and configured is not None and configured.exists():
        anchors = configured
    if anchors is not None:
        found.extend(ledger_rows.read_anchors(anchors))
    return found


@ledger.command("verify")
@click.option(
    "--expect",
    multiple=True,
    metavar="SEQ:HASH",
    help="An anchor written down earlier (as printed by verify); repeatable.",
)
@click.option(
    "--anchors",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Check every anchor in this file (default: `ledger: anchors:` of connector.yaml).",
)
@click.pass_obj
def ledger_verify(app: App, expect: tuple[str, ...], anchors: Path | None) -> None:
    """Check the ledger's keyed hash chain, its anchors and the id map; exit 3 if anything
    was edited, removed, moved, cut off or rewritten.

    \b
    Prints the head anchor (SEQ:HASH): write it down, or let `ledger: anchors:` keep it.
    """
    expected = _expected(app, expect, anchors)
    with open_store(app, keyed=True) as store:
        report = store.verify_ledger(expected)
    click.echo(
        f"head anchor: {ledger_rows.format_anchor(report.head_seq or 0, report.head_hash or '')}"
    )
    for problem in report.problems:
        click.secho(problem, fg="red", err=True)
    if not report.ok:
        raise ConfigError(
            f"the ledger has been tampered with ({len(report.problems)} problem(s))",
            hint="Restore the state database from a backup and compare.",
        )
    click.echo(
        f"ledger ok: {report.checked} row(s), hash chain intact, id map agrees, "
        f"{len(expected)} anchor(s) hold"
    )


@ledger.command("migrate")
@click.pass_obj
def ledger_migrate(app: App) -> None:
    """Re-chain a ledger written before the ledger key with it (once, after upgrading).

    The unkeyed chain is verified first; a broken one is left as it is. Run this only on a
    ledger you know this connector wrote: its unkeyed rows prove nothing by themselves.
    """
    with open_store(app, keyed=True, create_key=True) as store:
        count = store.migrate_ledger()
        seq, digest = store.ledger_anchor()
        export_anchor(app, store, quiet=True)
    click.echo(f"re-chained {count} row(s) with the ledger key")
    click.echo(f"head anchor: {ledger_rows.format_anchor(seq, digest)}")


@ledger.command("export")
@output_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON lines or CSV.",
)
@click.pass_obj
def ledger_export(app: App, output: Path | None, fmt: str) -> None:
    """Write the whole ledger for an auditor (field names and masks, never values)."""
    with open_store(app) as store:
        if output is None:
            count = store.export_ledger(sys.stdout, fmt=fmt)  # type: ignore[arg-type]
        else:
            counted: list[int] = []
            write_output(output, lambda out: counted.append(store.export_ledger(out, fmt=fmt)))  # type: ignore[arg-type]
            count = counted[0]
    click.echo(f"exported {count} ledger row(s)", err=True)
