"""`connector jobs`: every job of connector.yaml, those expanded from job templates too."""

from __future__ import annotations

from typing import Any

import click

from connector_core.cli.app import App, emit_json


@click.command()
@click.option("--template", metavar="NAME", help="Only the partner jobs of this job template.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def jobs(app: App, template: str | None, as_json: bool) -> None:
    """List the jobs: hand-written ones and one per partner of each job template.

    \b
    A partner's job is named TEMPLATE.PARTNER; every command that takes a
    job takes it, e.g. `connector plan local.leeds-north`.
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
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        origin = f"  (template {row['template']})" if row["template"] else ""
        off = "" if row["enabled"] else "  [disabled]"
        click.echo(f"{row['job']}: {row['source']} -> {row['target']}{origin}{off}")
