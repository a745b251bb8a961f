"""`connector doctor`: check config, plugins, credentials, connectivity and every job.

For each job it loads the policy as a run does (the hash key included), checks the source
against its mapping and the policy exactly as a run does (schema drift), and shows how many
records the source holds, so an empty or shrunken source is seen before a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import click
import sqlalchemy as sa

from connector_core.cli.app import App, emit_json
from connector_core.cli.ledger import against_anchors
from connector_core.cli.policy import PolicyEnv
from connector_core.credentials import (
    NETWORK,
    backend_stores_in_clear,
    env_var_name,
    keyring_keeps_nothing,
    secret_refs,
)
from connector_core.errors import ConfigValidationError, ConnectorError, ExitCode, SecretMissing
from connector_core.sync.database import display_url
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.schema_check import SchemaReport, check_source
from connector_core.sync.state import StateStore

T = TypeVar("T")


@dataclasses.dataclass
class Finding:
    """One line of the doctor's report."""

    subject: str
    ok: bool
    message: str
    hint: str | None = None
    exit_code: int = ExitCode.OK
    warning: bool = False

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        return dataclasses.asdict(self)


def _failed(subject: str, err: ConnectorError) -> Iterator[Finding]:
    lines = [str(p) for p in err.problems] if isinstance(err, ConfigValidationError) else [str(err)]
    for line in lines:
        yield Finding(subject, False, line, err.hint, err.exit_code)


def check_plugins(app: App) -> Iterator[Finding]:
    """Plugins load, no import failures, adapter names unique."""
    try:
        found = app.adapters
    except ConnectorError as err:
        yield from _failed("plugins", err)
        return
    for failure in app.pm.failures:
        yield Finding(
            f"plugin {failure.name}",
            False,
            f"{failure.distribution} failed to load: {failure.error}",
            f"Reinstall it, or skip it with --disable-plugin {failure.name}.",
            ExitCode.CONFIG,
        )
    yield Finding(
        "plugins", True, f"{len(app.pm.infos)} plugin(s), adapters: " + (", ".join(found) or "none")
    )


def check_keyring() -> Iterator[Finding]:
    """Warn when the keyring backend keeps secrets in clear text (keyrings.alt's file)."""
    backend = backend_stores_in_clear()
    if backend is None:
        return
    yield Finding(
        "keyring",
        True,
        f"the keyring backend {backend} stores secrets in CLEAR TEXT, readable by anyone who "
        "can read its file",
        "Use the desktop's keyring (Secret Service, KWallet, macOS Keychain), or on a headless "
        "server give secrets as CONNECTOR_SECRET_... variables from a file only the job's user "
        "can read (docs/admin-guide.md, Secrets).",
        warning=True,
    )


def check_connection(app: App, name: str) -> Iterator[Finding]:
    """The connection's secrets resolve and its tool answers."""
    subject = f"connection {name}"
    settings = app.config.settings[name]
    lookup = app.config.secrets(name)
    try:
        for _setting, ref in secret_refs(settings):
            lookup.resolve(ref)
        with app.config.open_adapter(name) as adapter:
            note = adapter.check()
    except ConnectorError as err:
        yield from _failed(subject, err)
        return
    reachable = f"{app.config.model.connections[name].adapter}: reachable"
    yield Finding(subject, True, f"{reachable}; {note}" if note else reachable)


def check_network_secrets(app: App) -> Iterator[Finding]:
    """The network's own secrets (the hash key) resolve."""
    ref = app.config.model.network.hash_key
    if ref is None:
        return
    try:
        app.config.secrets().resolve(ref)
    except ConnectorError as err:
        yield from _failed("network hash_key", err)
        return
    yield Finding("network hash_key", True, "found")


def check_notifications(app: App) -> Iterator[Finding]:
    """Each notification channel works, without telling anyone (SMTP login, then QUIT)."""
    from connector_core import notify  # smtplib, ssl: only for configs that notify

    for ok, text in notify.check(app.config):
        hint = None if ok else "See docs/notifications.md; a failing channel never stops a run."
        yield Finding("notifications", ok, text, hint, ExitCode.OK if ok else ExitCode.CONFIG)


def check_job(app: App, name: str) -> Iterator[Finding]:
    """The job loads (policy, masks, hash key), its source matches, and its record count."""
    subject = f"job {name}"
    env = PolicyEnv.from_app(app)
    try:
        job = load_job(app.config, name, masks=env.masks, context=env.context(), check_schema=False)
    except ConnectorError as err:
        yield from _failed(subject, err)
        return
    try:
        yield from _job_findings(app, subject, job)
    except ConnectorError as err:
        yield from _failed(subject, err)
    finally:
        job.close()


def _job_findings(app: App, subject: str, job: LoadedJob) -> Iterator[Finding]:
    report = check_source(app.config, job.config.source, job.source, job.policy)
    for problem in report.warnings:
        yield Finding(subject, True, str(problem), warning=True)
    if report.errors:
        hint = "Fix the lines above (or the source): `connector run` refuses this job until then."
        for problem in report.errors:
            yield Finding(subject, False, str(problem), hint, ExitCode.CONFIG)
        return
    job.target.check_writes()
    count = job.source.count()
    counted = "records: unknown" if count is None else f"{count} record(s)"
    yield Finding(
        subject,
        True,
        f"source {job.config.source}: {counted}; policy {job.policy.name}; {_schema(report)}",
    )


def _schema(report: SchemaReport) -> str:
    if report.fields is None:
        return "fields not checked (the adapter cannot list them)"
    if not report.fields.verified:
        return "fields checked against the mapping only"
    return "fields match"


def check_ledger_key(app: App) -> Iterator[Finding]:
    """The ledger key resolves, or the first run may generate it (a ledger never keyed)."""
    ref = app.config.model.network.ledger_key
    try:
        app.config.secrets().resolve(ref)
    except SecretMissing as err:
        try:
            keyed = _ledger_keyed(app.config.model.state.url)
        except ConnectorError as state_err:
            yield from _failed("ledger key", state_err)
            return
        if keyed or ref.secret is None:
            yield Finding("ledger key", False, str(err), err.hint, ExitCode.CONFIG)
        elif keyring_keeps_nothing():
            message = f"{err}, and the keyring backend keeps nothing: the first run cannot "
            message += "generate one into it"
            hint = f"Export {env_var_name(NETWORK, ref.secret)} (a long random value, e.g. "
            hint += "`openssl rand -hex 32`; back it up) in the jobs' environment, or use a "
            hint += "keyring that keeps secrets."
            yield Finding("ledger key", False, message, hint, ExitCode.CONFIG)
        else:
            yield Finding(
                "ledger key",
                True,
                "not set yet: the first run generates one into the keyring (back it up)",
            )
        return
    except ConnectorError as err:  # no keyring backend, for one
        yield from _failed("ledger key", err)
        return
    yield Finding("ledger key", True, "set")


def check_state_store(app: App) -> Iterator[Finding]:
    """With an anchor file: the store still holds the ledger the file records (every run
    refuses a store that lost it, see :func:`~connector_core.cli.ledger.against_anchors`)."""
    if app.config.model.ledger.anchors is None:
        return
    url = app.config.model.state.url
    try:
        lost, behind = against_anchors(app, lambda: _ledger_head(url), display_url(url))
    except ConnectorError as err:
        yield from _failed("state store", err)
        return
    if lost is not None:
        yield from _failed("state store", lost)
    elif behind is not None:
        yield Finding("state store", True, behind, warning=True)
    else:
        yield Finding("state store", True, "matches its anchor file")


def _ledger_keyed(url: str) -> bool:
    """Whether the store's ledger was written with a key; a SQLite file not yet created was not
    (and is not created here)."""
    return _existing(url) and _opened(url, StateStore.ledger_keyed)


def _ledger_head(url: str) -> int:
    """The seq of the store's last ledger row; 0 for a SQLite file not yet created (and not
    created here)."""
    return _opened(url, lambda store: store.ledger_anchor()[0]) if _existing(url) else 0


def _existing(url: str) -> bool:
    """False for a SQLite file that does not exist; True for any other store."""
    parsed = sa.make_url(url)
    database = parsed.database or ""
    on_disk = database != ":memory:" and not database.startswith("file:")
    if parsed.get_backend_name() == "sqlite" and database and on_disk:
        return Path(database).exists()
    return True


def _opened(url: str, read: Callable[[StateStore], T]) -> T:
    with StateStore.open(url) as store:
        return read(store)


def run_checks(app: App) -> Iterator[Finding]:
    """Every check, in the order an admin would fix things."""
    yield from check_plugins(app)
    try:
        config = app.config
    except ConnectorError as err:
        yield from _failed("config", err)
        return
    yield Finding(
        "config",
        True,
        f"{config.path}: {len(config.model.connections)} "
        f"connection(s), {len(config.model.jobs)} job(s)",
    )
    yield from check_keyring()
    yield from check_ledger_key(app)
    yield from check_state_store(app)
    for name in config.model.connections:
        yield from check_connection(app, name)
    yield from check_network_secrets(app)
    yield from check_notifications(app)
    for name in config.model.jobs:
        yield from check_job(app, name)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_obj
def doctor(app: App, as_json: bool) -> None:
    """Check the config, plugins, credentials, each connection and each job; list problems.

    For every job: its policy loads, its source still has every column or field the
    mapping and the policy rely on (what `connector run` refuses otherwise), and how many
    records the source holds now.

    Exits 0 when all is well, 3 for config/plugin/credential/schema problems, 4 when a
    tool is unreachable or refuses our credentials.
    """
    findings = list(run_checks(app))
    if as_json:
        emit_json([f.as_dict() for f in findings])
    else:
        for f in findings:
            mark = click.style("ok  ", fg="green") if f.ok else click.style("FAIL", fg="red")
            mark = click.style("warn", fg="yellow") if f.warning else mark
            click.echo(f"{mark} {f.subject}: {f.message}")
            if f.hint:
                click.echo(f"     hint: {f.hint}")
    problems = [f for f in findings if not f.ok]
    if problems:
        click.echo(f"{len(problems)} problem(s) found", err=True)
        raise SystemExit(min(f.exit_code for f in problems if f.exit_code) or ExitCode.CONFIG)
    click.echo("all checks passed", err=True)
