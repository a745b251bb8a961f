"""Job templates: connector.yaml's ``partners:`` section expanded into one job per partner.

Each template names a source, a policy, a target connection template and a registry. Each
partner of the registry (:mod:`connector_core.partners`) becomes:

- a job ``TEMPLATE.PARTNER`` (in ``Config.model.jobs``, so every command that takes a job
  takes it), with its own state, cursor, lock, intent log and ledger identity;
- a target connection of the same name, its settings rendered from the partner's row and
  validated by the adapter's own settings model (errors name the registry line);
- a policy loaded with the partner's row as parameters (:func:`load_policy`'s ``partner``).

Partner jobs removed from a registry are retired by :mod:`connector_core.sync.partners`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connector_core.adapters import Adapter, AdapterSettings, Capability
from connector_core.config import (
    CONNECTION_NAME_RE,
    ConnectionConfig,
    ConnectorConfig,
    JobConfig,
    PartnerTemplateConfig,
)
from connector_core.errors import ConfigValidationError, Problem
from connector_core.files import RealPaths
from connector_core.local_paths import known_places, target_problems
from connector_core.partners import (
    PartnerRow,
    param_column,
    param_value,
    partner_job_name,
    read_registry,
    render_settings,
)
from connector_core.yaml_errors import (
    LocatedDocument,
    did_you_mean,
    load_yaml,
    validator_message,
)


@dataclasses.dataclass(frozen=True)
class PartnerJob:
    """One job expanded from a template: the template's name, the partner's row, the job."""

    name: str
    template: str
    row: PartnerRow
    job: JobConfig
    connection: ConnectionConfig
    settings: AdapterSettings = dataclasses.field(repr=False)


def expand_templates(
    doc: LocatedDocument,
    model: ConnectorConfig,
    adapters: Mapping[str, type[Adapter]],
    settings: dict[str, AdapterSettings],
    base_dir: Path,
    problems: list[Problem],
) -> dict[str, PartnerJob]:
    """Add every template's partner jobs and target connections to `model` and `settings`;
    return them by job name. Problems (the registry's, a target's settings) go to `problems`."""
    expanded: dict[str, PartnerJob] = {}
    for template, body in model.partners.items():
        found = _template_problems(doc, model, adapters, template, body)
        if found:
            problems += found
            continue
        try:
            rows = read_registry(body.registry)
            columns = policy_columns(body.policy)
        except ConfigValidationError as err:
            problems += err.problems
            continue
        for row in rows:
            found = [p for c in columns if (p := param_value(row, c, body.policy.name)[1])]
            problems += found
            partner = expand_partner(template, body, row, adapters, base_dir, problems)
            if found:
                continue
            if partner is None:
                continue
            if partner.name in model.jobs or partner.name in model.connections:
                problems.append(row.cells["name"].problem(f"{partner.name!r} is taken already"))
                continue
            expanded[partner.name] = partner
    problems += _own_places(doc, model, expanded, settings)
    problems += _shared_places(expanded, settings, adapters)
    for name, partner in expanded.items():
        model.jobs[name] = partner.job
        model.connections[name] = partner.connection
    return expanded


def _own_places(
    doc: LocatedDocument,
    model: ConnectorConfig,
    expanded: Mapping[str, PartnerJob],
    settings: Mapping[str, AdapterSettings],
) -> list[Problem]:
    """The rules of a hand-written target's paths (:mod:`connector_core.local_paths`) for
    each partner's: never a link, nor a source's, another connection's or the connector's
    own file (the anchors file, the state store, connector.yaml...), said at its row."""
    places = known_places(doc, settings, model)
    plain: set[str] = set()  # the folders on the way to the targets, each looked at once
    return [
        partner.row.cells["name"].problem(
            f"partner {partner.row.name!r}: its target's {key}: {message}"
        )
        for partner in expanded.values()
        for key, message in target_problems(partner.settings, places, plain)
    ]


def expand_partner(
    template: str,
    body: PartnerTemplateConfig,
    row: PartnerRow,
    adapters: Mapping[str, type[Adapter]],
    base_dir: Path,
    problems: list[Problem],
) -> PartnerJob | None:
    """The job of one partner, its target's settings validated; None (and `problems`) when
    the row does not fill the template."""
    name = partner_job_name(template, row.name)
    used_at = f"partners.{template}.target.settings"
    mine: list[Problem] = []
    values = render_settings(body.target.settings, row, used_at, mine)
    adapter = adapters[body.target.adapter]
    validated = None
    if not mine:
        try:
            validated = adapter.settings_model.model_validate(
                values, context={"base_dir": base_dir}
            )
        except ValueError as err:
            mine += [
                Problem(
                    row.path,
                    row.line,
                    None,
                    f"partner {row.name!r}: the target settings of template {template!r} "
                    f"are not valid for this partner: {line}",
                )
                for line in _plain_errors(err)
            ]
    problems += mine
    if validated is None:
        return None
    # Every value but the names was checked with the template (its policy file, schedule...)
    # and the settings just above: built without checking them again per partner.
    connection = ConnectionConfig.model_construct(
        adapter=body.target.adapter,
        description=f"partner {row.name} of template {template}",
        settings=values,
        mapping=dict(body.target.mapping),
    )
    job = JobConfig.model_construct(
        source=body.source,
        target=name,
        policy=body.policy,
        schedule=body.schedule,
        mode=body.mode,
        enabled=body.enabled,
        options=dict(body.options),
    )
    return PartnerJob(name, template, row, job, connection, validated)


def _plain_errors(err: ValueError) -> list[str]:
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return [str(err)]
    found = []
    for e in errors():
        where = ".".join(str(p) for p in e.get("loc", ()))
        found.append(f"{where}: {validator_message(e.get('msg', ''))}".lstrip(": "))
    return found


def _template_problems(
    doc: LocatedDocument,
    model: ConnectorConfig,
    adapters: Mapping[str, type[Adapter]],
    template: str,
    body: PartnerTemplateConfig,
) -> list[Problem]:
    loc: tuple[str, ...] = ("partners", template)
    problems = []
    if not CONNECTION_NAME_RE.match(template):
        message = f"template name {template!r}: use lowercase letters, digits, '_' and '-'"
        problems.append(doc.problem(loc, message, key=True))
    if body.source not in model.connections:
        suggestion = did_you_mean(body.source, model.connections)
        message = f"partners.{template}.source: unknown connection {body.source!r}{suggestion}"
        problems.append(doc.problem((*loc, "source"), message))
    adapter = adapters.get(body.target.adapter)
    if adapter is None:
        suggestion = did_you_mean(body.target.adapter, adapters)
        message = f"partners.{template}.target.adapter: unknown adapter {body.target.adapter!r}"
        problems.append(doc.problem((*loc, "target", "adapter"), message + suggestion))
    elif {Capability.WRITE, Capability.DELETE} - adapter.capabilities:
        message = f"partners.{template}.target.adapter: the {adapter.name} adapter cannot "
        message += "write and delete; a partner's target must (its data is taken back)"
        problems.append(doc.problem((*loc, "target", "adapter"), message))
    return problems


def _identity(values: AdapterSettings, real: RealPaths) -> frozenset[str]:
    """``values.target_identity()``; the default one with `real` resolving its paths."""
    if type(values).target_identity is AdapterSettings.target_identity:
        return values.written_places(real)
    return values.target_identity()


def _shared_places(
    expanded: Mapping[str, PartnerJob],
    settings: dict[str, AdapterSettings],
    adapters: Mapping[str, type[Adapter]],
) -> list[Problem]:
    """Add the partners' validated settings to `settings`; refuse two partners (or a partner
    and a hand-written connection) writing one place: they would mix their audiences."""
    places: dict[str, str] = {}
    for name, values in settings.items():
        places.update(dict.fromkeys(values.target_identity(), name))
    problems = []
    real = RealPaths()  # the partners' folders resolved once
    for name, partner in expanded.items():
        values = settings[name] = partner.settings
        if Capability.PER_JOB_RECORDS in adapters[partner.connection.adapter].capabilities:
            continue
        for place in sorted(_identity(values, real)):
            other = places.setdefault(place, name)
            if other != name:
                problems.append(
                    partner.row.cells["name"].problem(
                        f"partner {partner.row.name!r} would write the same place as "
                        f"{other!r}; give each partner its own file or address book"
                    )
                )
    return problems


def policy_columns(path: Path) -> list[str]:
    """The registry columns a policy's conditions use (``{partner: COLUMN}``), in order."""
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        column = param_column(node)
        if column is not None:
            found[column] = None
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    rules = load_yaml(path).get(("rules",))
    for rule in rules if isinstance(rules, list) else []:
        if isinstance(rule, dict):
            walk(rule.get("when"))
    return list(found)
