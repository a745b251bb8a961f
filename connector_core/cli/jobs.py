"""`connector jobs`: every job of connector.yaml, those expanded from job templates too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from connector_core.cli.app import App, emit_json
from connector_core.errors import ConfigError, ConnectorError, ExitCode

if TYPE_CHECKING:
    from connector_core.sync.runner import RunResult
    from connector_core.sync.state import StateStore


@click.command()
@click.option("--template", metavar="NAME", help="Only the partner jobs of this job template.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def jobs(app: App, template: str | None, as_json: bool) -> None:
    """List the jobs: hand-written ones and one per partner of each job template.

    \b
    A partner's job is named TEMPLATE.PARTNER; every command that takes a
    job takes it, e.g. `connector plan local.leeds-north`. Fan-ins are
    listed too, with their partners' sources.
    """
    config = app.config
    rows: list[dict[str, Any]] = []
    for name, job in config.model.jobs.items():
        partner = config.partner_jobs.get(name)
        if template is not None and (partner is None or partner.template != template):
            continue
        rows.append(
            {
                "job": name,
                "template": None if partner is None else partner.template,
                "partner": None if partner is None else partner.row.name,
                "source": job.source,
                "target": job.target,
                "policy": str(job.policy),
                "schedule": job.schedule,
                "enabled": job.enabled,
            }
        )
    if template is None:
        rows += _fan_ins(app)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        origin = f"  (template {row['template']})" if row["template"] else ""
        off = "" if row["enabled"] else "  [disabled]"
        click.echo(f"{row['job']}: {row['source']} -> {row['target']}{origin}{off}")


def _fan_ins(app: App) -> list[dict[str, Any]]:
    """The fan-in jobs, each with its partners' sources (``source``: their connections)."""
    return [
        {
            "job": name,
            "template": None,
            "partner": None,
            "source": ", ".join(s.connection for s in fan_in.sources),
            "target": fan_in.body.target,
            "policy": str(fan_in.body.policy),
            "schedule": fan_in.body.schedule,
            "enabled": fan_in.body.enabled,
            "fan_in": list(fan_in.partners),
        }
        for name, fan_in in app.config.fan_ins.items()
    ]


def move_partners(app: App, store: StateStore) -> None:
    """Take back what each partner whose target moved (its registry row names another
    file or address book) wrote to its old target, before any job runs; a partner whose old
    target cannot be emptied now is blocked in this process (its job refuses to load, so
    nothing goes to the new place) and is tried again by the next run."""
    if not app.config.model.partners:
        return
    from connector_core.cli.policy import PolicyEnv
    from connector_core.sync.partners import move, plan_moves

    moves = plan_moves(app.config, store)
    if not moves:
        return
    env = PolicyEnv.from_app(app)
    for name, (template, row) in moves.items():
        try:
            result = move(
                app.config, store, name, template, row, masks=env.masks, context=env.context()
            )
            error: ConnectorError | None = result.error
        except ConnectorError as err:
            result, error = None, err
        if error is not None or result is None or store.mapped_count(name):
            why = error or "records are still held there"
            blocked = ConfigError(
                f"{name}: its target moved; its old one could not be emptied: {why}; the "
                "job does not run until it is",
                hint="Make the old target writable again (or put the old value back in "
                "the registry); the next run tries again.",
            )
            app.config.blocked[name] = blocked
            click.secho(str(blocked), fg="red", err=True)
        else:
            click.echo(
                f"{name}: its target moved, took back {result.counts.deleted} from the old one"
            )


def block_held_places(app: App, store: StateStore) -> None:
    """Block (in this process) each partner job whose target is where a partner that left
    but is not retired yet still holds records (:func:`~connector_core.sync.partners.held_places`):
    it waits until that partner is retired there, never mixing two audiences."""
    if not app.config.model.partners:
        return
    from connector_core.sync.partners import held_places

    for name, other in held_places(app.config, store).items():
        blocked = ConfigError(
            f"{name}: its target is where {other}, which left, still holds records; the job "
            f"does not run until {other} is retired there",
            hint=f"See why {other} is not retired yet (a held retirement: --accept-retire N; "
            "an unreachable target: the next run tries again), or give this partner another "
            "target.",
        )
        app.config.blocked[name] = blocked
        click.secho(str(blocked), fg="red", err=True)


def sync_partners(
    app: App, store: StateStore, *, retire: bool, accept: int = 0, quiet: bool = False
) -> tuple[list[RunResult], list[int]]:
    """Remember the registries' partners; with `retire`, take back the data of those that
    left (see :mod:`connector_core.sync.partners`). Returns the retirements' results and
    the exit codes of what could not be done."""
    if not app.config.model.partners:
        return [], []
    from connector_core.cli.policy import PolicyEnv
    from connector_core.sync.partners import plan_partners, remember
    from connector_core.sync.partners import retire as retire_job

    plan = plan_partners(app.config, store, accept) if retire else None
    remember(app.config, store, skip=app.config.blocked)  # a pending move: not yet
    if plan is None:
        block_held_places(app, store)
        return [], []
    codes: list[int] = []
    for line in plan.held:
        click.secho(f"partners: {line}", fg="red", err=True)
        click.echo(
            "  hint: check the registry; if they really left, run `connector run --all "
            f"--accept-retire {plan.held_count}`",
            err=True,
        )
        codes.append(ExitCode.DELETES_HELD)
    env = PolicyEnv.from_app(app)
    results = []
    for name, (template, row) in plan.retire.items():
        try:
            result = retire_job(
                app.config, store, name, template, row, masks=env.masks, context=env.context()
            )
        except ConnectorError as err:
            click.secho(f"{name}: not retired: {err}", fg="red", err=True)
            codes.append(err.exit_code)
            continue
        results.append(result)
        if result.error is not None:  # the next run tries again
            click.secho(f"{name}: not retired yet: {result.error}", fg="red", err=True)
        elif not quiet:
            click.echo(f"{name}: retired (left the registry), took back {result.counts.deleted}")
    block_held_places(app, store)  # after this run's retirements
    return results, codes
