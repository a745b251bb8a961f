"""Retiring partners: a partner removed from its registry has its data taken back.

The state store remembers every partner job's registry row (``partner_jobs``), as the last
real run saw it. :func:`plan_partners` compares it with the registries of now: a remembered
partner the registry no longer lists is *retired*: its job is loaded from the remembered row
(its target's settings and its policy as they were) and everything it holds is taken back
(:meth:`JobRun.take_back_everything`), through the intent log, id map and ledger like any
delete, with the reason ``partner-retired``. Only then is it marked retired.

Never on absent evidence: a registry that cannot be read, or is empty, stops the load of
connector.yaml before this module is reached. And more retirements of one template at once
than its ``max_retire`` (default: 5, or 10% of its partners if more) are held until a person
accepts them (``connector run --all --accept-retire N``), as the mass-delete guard holds
deletes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import weakref
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from connector_core.adapters import Capability
from connector_core.config import Config
from connector_core.errors import ConfigError, ConnectorError, Problem
from connector_core.hookspecs import MaskFactory
from connector_core.masks import MaskContext
from connector_core.partners import PartnerRow
from connector_core.sync import dialect
from connector_core.sync.job import load_job
from connector_core.sync.runner import RunResult, new_run
from connector_core.sync.state import StateStore
from connector_core.sync.tables import partner_jobs

if TYPE_CHECKING:
    from connector_core.templates import PartnerJob

RETIRED = "partner-retired"
#: The reason of a take-back from the place a partner's target was before it moved.
MOVED = "partner-moved"


@dataclasses.dataclass
class PartnerPlan:
    """What the registries changed since the last run: partner jobs to retire (with their
    remembered rows), and why some retirements are held back."""

    retire: dict[str, tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=dict)
    held: list[str] = dataclasses.field(default_factory=list)
    held_count: int = 0


#: what each open store remembers, read once per command (15,000 partners' rows take about
#: 0.15 s to read): dropped whenever this module writes them
_REMEMBERED: weakref.WeakKeyDictionary[StateStore, dict[str, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def remembered(store: StateStore) -> Mapping[str, Mapping[str, Any]]:
    """The partner jobs the store remembers, by job name (read-only)."""
    found = _REMEMBERED.get(store)
    if found is None:
        with store._transaction() as conn:
            rows = conn.execute(sa.select(partner_jobs)).mappings().all()
        found = _REMEMBERED[store] = {r["job"]: dict(r) for r in rows}
    return found


def remember(
    config: Config,
    store: StateStore,
    now: dt.datetime | None = None,
    *,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
) -> None:
    """Remember the registry rows of every partner job of `config` (new or changed), or of
    those in `only`, but those in `skip` (a move not yet done: tried again next time)."""
    known = remembered(store)
    now = now or dt.datetime.now(dt.UTC)
    fresh = [
        {
            "job": name,
            "template": p.template,
            "partner": p.row.name,
            "row": p.row.values(),
            "status": "active",
            "updated_at": now,
        }
        for name, p in config.partner_jobs.items()
        if (only is None or name in only)
        and name not in skip
        and (
            known.get(name, {}).get("row") != p.row.values()
            or known.get(name, {}).get("status") != "active"
        )
    ]
    if not fresh:
        return
    _REMEMBERED.pop(store, None)
    with store._transaction(write=True) as conn:
        names = [f["job"] for f in fresh]
        conn.execute(partner_jobs.delete().where(dialect.among(conn, partner_jobs.c.job, names)))
        conn.execute(partner_jobs.insert(), fresh)


def plan_partners(config: Config, store: StateStore, accept: int = 0) -> PartnerPlan:
    """The partner jobs to retire now, and the templates whose retirements are held."""
    plan = PartnerPlan()
    by_template: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    active: dict[str, int] = {}
    for name, row in remembered(store).items():
        if row["status"] != "active":
            continue
        active[row["template"]] = active.get(row["template"], 0) + 1
        if name not in config.partner_jobs:
            by_template.setdefault(row["template"], []).append((name, row["row"]))
    for template, gone in sorted(by_template.items()):
        limit = _limit(config, template, active[template])
        if len(gone) > max(limit, accept):
            plan.held_count += len(gone)
            plan.held.append(
                f"template {template!r}: {len(gone)} of its {active[template]} partners left "
                f"the registry at once, more than its limit of {limit}; none was retired"
            )
            continue
        plan.retire.update((name, (template, row)) for name, row in gone)
    return plan


def _limit(config: Config, template: str, count: int) -> int:
    body = config.model.partners.get(template)
    if body is not None and body.max_retire is not None:
        return body.max_retire
    return max(5, count // 10)


def retire(
    config: Config,
    store: StateStore,
    name: str,
    template: str,
    row: Mapping[str, Any],
    *,
    masks: Mapping[str, MaskFactory] | None = None,
    context: MaskContext | None = None,
) -> RunResult:
    """Take back everything the partner job `name` holds; mark it retired when nothing is
    left. Raises ConfigError when its template is gone (nothing is taken back then)."""
    _adopt(config, name, template, row)
    result = _take_back(config, store, name, RETIRED, masks, context)
    if _emptied(store, name, result):
        store.forget_reads(name)  # back in the registry one day, it shares its people again
        _REMEMBERED.pop(store, None)
        with store._transaction(write=True) as conn:
            conn.execute(
                partner_jobs.update().where(partner_jobs.c.job == name).values(status="retired")
            )
    return result


def plan_moves(config: Config, store: StateStore) -> dict[str, tuple[str, dict[str, Any]]]:
    """The partner jobs whose target moved since they were remembered (their registry row
    now renders another place: a file, an address book), with their remembered rows."""
    moved = {}
    for name, old in remembered(store).items():
        partner = config.partner_jobs.get(name)
        if partner is None or old["status"] != "active" or old["row"] == partner.row.values():
            continue
        before = _render(config, name, old["template"], old["row"])
        if before is None:
            continue  # the old row no longer fills the template: nothing to compare
        now = (partner.connection.adapter, partner.settings.target_identity())
        if (before.connection.adapter, before.settings.target_identity()) != now:
            moved[name] = (old["template"], old["row"])
    return moved


def held_places(config: Config, store: StateStore) -> dict[str, str]:
    """The partner jobs of `config` whose target is where a partner that left its registry
    but is not retired yet (its retirement held, or not finished) still holds records,
    each with that partner's job name: writing there would mix the two audiences."""
    leaving: dict[tuple[str, str], str] = {}
    for name, old in remembered(store).items():
        if old["status"] != "active" or name in config.partner_jobs:
            continue
        before = _render(config, name, old["template"], old["row"])
        if before is not None and store.mapped_count(name):
            for place in before.settings.target_identity():
                leaving[before.connection.adapter, place] = name
    found: dict[str, str] = {}
    if not leaving:  # the usual run: no target is looked at again (15,000 of them: 0.6 s)
        return found
    for name, partner in config.partner_jobs.items():
        adapter = config.installed[partner.connection.adapter]
        if Capability.PER_JOB_RECORDS in adapter.capabilities:
            continue  # each job's records are its own there: nothing mixes
        for place in partner.settings.target_identity():
            other = leaving.get((partner.connection.adapter, place))
            if other is not None:
                found[name] = other
    return found


def move(
    config: Config,
    store: StateStore,
    name: str,
    template: str,
    row: Mapping[str, Any],
    *,
    masks: Mapping[str, MaskFactory] | None = None,
    context: MaskContext | None = None,
) -> RunResult:
    """Take back everything the partner job `name` wrote to the place its remembered `row`
    renders, before its job writes to the new one: then remember its row and forget its
    reads, so that its next run shares its people at the new place as a first run. Until
    that succeeds its row is not remembered: the next run tries again."""
    current = config.partner_jobs[name]
    try:
        _adopt(config, name, template, row)
        result = _take_back(config, store, name, MOVED, masks, context)
    finally:
        _install(config, name, current)
    if _emptied(store, name, result):
        store.forget_reads(name)
        remember(config, store, only=[name])
    return result


def _take_back(
    config: Config,
    store: StateStore,
    name: str,
    reason: str,
    masks: Mapping[str, MaskFactory] | None,
    context: MaskContext | None,
) -> RunResult:
    """Run job `name` (as `config` has it now) once, taking back everything it holds."""
    job = load_job(config, name, masks=masks, context=context, check_schema=False)
    try:
        run = new_run(job, store)
        with store.lock(job.name, target=job.config.target):
            run.begin(reconcile=False)
            try:
                run.take_back_everything(reason)
                run.end()
            except ConnectorError as exc:
                run.abort(exc)
            return run.finish()
    finally:
        job.close()


def _emptied(store: StateStore, name: str, result: RunResult) -> bool:
    return result.error is None and not store.mapped_count(name) and not store.outstanding(name)


def _render(
    config: Config, name: str, template: str, values: Mapping[str, Any]
) -> PartnerJob | None:
    """The partner job a remembered row renders with the template of now; None if the
    template is gone or the row no longer fills it."""
    from connector_core.templates import expand_partner

    body = config.model.partners.get(template)
    if body is None:
        return None
    row = PartnerRow.remembered(values, "the state store's copy of the registry")
    return expand_partner(template, body, row, config.installed, config.base_dir, [])


def _adopt(config: Config, name: str, template: str, values: Mapping[str, Any]) -> None:
    """Add the partner's job, as its remembered row renders it, to `config`."""
    from connector_core.templates import expand_partner

    body = config.model.partners.get(template)
    if body is None:
        raise ConfigError(
            f"partner job {name!r} left its registry, but its template {template!r} is no "
            f"longer in {config.path}: its data cannot be taken back",
            hint=f"Put the template {template!r} back (its partners' data is taken back by the "
            "next run), or take the data back by hand.",
        )
    problems: list[Problem] = []
    row = PartnerRow.remembered(values, "the state store's copy of the registry")
    partner = expand_partner(template, body, row, config.installed, config.base_dir, problems)
    if partner is None:
        raise ConfigError(
            f"partner job {name!r}: its remembered row no longer fills template {template!r}: "
            + "; ".join(p.message for p in problems),
            hint="Put the partner back in the registry for now.",
        )
    _install(config, name, partner)


def _install(config: Config, name: str, partner: PartnerJob) -> None:
    """Make `partner` the job and target connection `name` of `config`."""
    config.model.jobs[name] = partner.job
    config.model.connections[name] = partner.connection
    config.settings[name] = partner.settings
    config.adapters[name] = config.installed[partner.connection.adapter]
    config.partner_jobs[name] = partner
