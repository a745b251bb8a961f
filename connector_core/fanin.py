"""Fan-in jobs in connector.yaml (``fan_in:``): many partners' sources into one target.

A fan-in names one target connection, the target's policy, a consent purpose, how people
are matched (``email``, ``phone``) and its partners: listed one by one (``sources:``, each a
partner name, a source connection and a policy) and/or read from a partner registry
(``partners:``, a source connection template filled from each row, as a job template fills
its targets). This module checks all of that, with the file and line of every problem, and
expands the registry's rows into source connections named ``FANIN.PARTNER``. Running a fan-in
is :mod:`connector_core.sync.fanin`'s work.

People are matched by keyed hashes of :func:`normal_email` and :func:`normal_phone`, so these
two functions decide who is the same person; they never see a policy.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connector_core.adapters import Adapter, AdapterSettings, Capability
from connector_core.config import (
    CONNECTION_NAME_RE,
    ConnectionConfig,
    ConnectorConfig,
    FanInConfig,
)
from connector_core.errors import ConfigValidationError, Problem
from connector_core.partners import (
    PARTNER_NAME_RE,
    PartnerRow,
    param_value,
    partner_job_name,
    read_registry,
    render_settings,
)
from connector_core.yaml_errors import LocatedDocument, did_you_mean

__all__ = ["FanIn", "FanInSource", "expand_fan_ins", "normal_email", "normal_phone"]

_SPACES = re.compile(r"[\s\-().\/\u2010-\u2015\u2212]")  # and Unicode's hyphens and dashes
_WHITESPACE = re.compile(r"\s")
#: what a copy and paste or a spreadsheet leaves unseen: a soft hyphen, zero-width
#: characters, direction marks and embeddings, a byte order mark
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
#: the trunk prefix written in brackets after a country code: +44 (0)20 ...
_TRUNK = re.compile(r"^(\+|00)\s*(\d{1,3})\s*\(\s*0\s*\)")


@dataclasses.dataclass(frozen=True)
class FanInSource:
    """One partner of a fan-in: its name, source connection, policy and registry row."""

    partner: str
    connection: str
    policy: Path
    row: PartnerRow | None = None


@dataclasses.dataclass(frozen=True)
class FanIn:
    """A fan-in job of connector.yaml with its partners, sorted by name."""

    name: str
    body: FanInConfig
    sources: tuple[FanInSource, ...]

    @property
    def partners(self) -> tuple[str, ...]:
        """The partners' names, sorted (the tie-break order)."""
        return tuple(s.partner for s in self.sources)


def normal_email(value: Any) -> str | None:
    """An email address as people are matched by it: without invisible characters, trimmed,
    composed (NFC: an accent typed on a Mac matches one typed elsewhere), lower-case; None
    if it is not one (no ``@`` with text on both sides)."""
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFC", _INVISIBLE.sub("", value)).strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or _WHITESPACE.search(text):
        return None
    return text


def normal_phone(value: Any, country: str | None = None) -> str | None:
    """A phone number as people are matched by it: its digits, E.164-like (``+44 20 7946
    0000``, ``0044 20…``, ``+44 (0)20 7946 0000`` and, with `country` 44, ``020 7946 0000``
    all give ``442079460000``; full-width digits, Unicode dashes and invisible characters
    are read as a person sees them); None if it is not one (fewer than 7 digits, letters)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", value)).strip()
    text = _SPACES.sub("", _TRUNK.sub(r"\1\2", text))
    international = text.startswith("+")
    digits = text[1:] if international else text
    if not digits.isdigit() or not digits.isascii():
        return None
    if not international and digits.startswith("00"):
        digits, international = digits[2:], True
    elif not international and digits.startswith("0") and country:
        digits, international = country + digits[1:], True
    if len(digits) < 7 or len(digits) > 15:
        return None
    return digits


def expand_fan_ins(
    doc: LocatedDocument,
    model: ConnectorConfig,
    adapters: Mapping[str, type[Adapter]],
    settings: dict[str, AdapterSettings],
    base_dir: Path,
    problems: list[Problem],
) -> dict[str, FanIn]:
    """Check every fan-in; add the registry partners' source connections to `model` and
    `settings`; return the fan-ins by name. Problems go to `problems`."""
    found: dict[str, FanIn] = {}
    targets: dict[str, str] = {}
    for name, body in model.fan_in.items():
        mine = _check(doc, model, adapters, name, body)
        earlier = targets.setdefault(body.target, name)
        if earlier != name:
            message = f"fan_in.{name}.target: fan-in {earlier!r} writes connection "
            message += f"{body.target!r} too; a target has one writer: give each its own"
            mine.append(doc.problem(("fan_in", name, "target"), message))
        sources = [
            FanInSource(s.partner, s.source, s.policy)
            for s in body.sources
            if s.source in model.connections
        ]
        if body.partners is not None and not mine:
            sources += _registry_sources(name, body, model, adapters, settings, base_dir, mine)
        mine += _duplicates(doc, name, body, sources)
        if not sources and not mine:
            message = f"fan_in.{name}: no partner feeds it; list `sources:` or give `partners:`"
            mine.append(doc.problem(("fan_in", name), message))
        problems += mine
        ordered = tuple(sorted(sources, key=lambda s: s.partner))
        found[name] = FanIn(name, body, ordered)
    return found


def _check(
    doc: LocatedDocument,
    model: ConnectorConfig,
    adapters: Mapping[str, type[Adapter]],
    name: str,
    body: FanInConfig,
) -> list[Problem]:
    loc: tuple[str | int, ...] = ("fan_in", name)
    problems = []
    if not CONNECTION_NAME_RE.match(name):
        message = f"fan-in name {name!r}: use lowercase letters, digits, '_' and '-'"
        problems.append(doc.problem(loc, message, key=True))
    if name in model.jobs or name in model.connections:
        message = f"fan_in.{name}: a job or connection is called {name!r} already; rename one"
        problems.append(doc.problem(loc, message, key=True))
    refs: list[tuple[tuple[str | int, ...], str | None]] = [
        ((*loc, "target"), body.target),
        ((*loc, "suppress"), body.suppress),
    ]
    refs += [((*loc, "sources", i, "source"), s.source) for i, s in enumerate(body.sources)]
    for where, connection in refs:
        if connection is not None and connection not in model.connections:
            hint = did_you_mean(connection, model.connections) or (
                f"; defined connections: {', '.join(model.connections) or 'none'}"
            )
            message = f"{_dotted(where)}: unknown connection {connection!r}{hint}"
            problems.append(doc.problem(where, message))
    if body.purpose not in model.consent.purposes:
        hint = did_you_mean(body.purpose, model.consent.purposes)
        message = f"fan_in.{name}.purpose: {body.purpose!r} is not declared in consent.purposes"
        problems.append(doc.problem((*loc, "purpose"), message + hint))
    target = model.connections.get(body.target)
    cls = None if target is None else adapters.get(target.adapter)
    if cls is not None and {Capability.WRITE, Capability.DELETE} - cls.capabilities:
        message = f"fan_in.{name}.target: the {cls.name} adapter cannot write and delete; "
        message += "a fan-in's target must (people are taken back from it)"
        problems.append(doc.problem((*loc, "target"), message))
    writers = [j for j, job in model.jobs.items() if job.target == body.target]
    if writers:
        message = f"fan_in.{name}.target: job {writers[0]!r} writes connection "
        message += f"{body.target!r} too; a target has one writer: give the fan-in its own"
        problems.append(doc.problem((*loc, "target"), message))
    for i, source in enumerate(body.sources):
        if source.source == body.target:
            message = f"fan_in.{name}.sources[{i}]: the source is the fan-in's own target"
            problems.append(doc.problem((*loc, "sources", i, "source"), message))
    return problems


def _duplicates(
    doc: LocatedDocument, name: str, body: FanInConfig, sources: list[FanInSource]
) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for i, source in enumerate(sources):
        where: tuple[str | int, ...] = ("fan_in", name, "sources", i, "partner")
        listed = i < len(body.sources)
        if not PARTNER_NAME_RE.match(source.partner):
            message = f"partner name {source.partner!r}: use lowercase letters, digits, '-' "
            message += "and '_', starting with a letter or digit"
            problems.append(_at(doc, where, listed, source, message))
        elif source.partner in seen:
            message = f"fan_in.{name}: partner {source.partner!r} is listed twice; each "
            message += "partner feeds a fan-in once (merge its sources into one connection)"
            problems.append(_at(doc, where, listed, source, message))
        seen.add(source.partner)
    return problems


def _at(
    doc: LocatedDocument,
    where: tuple[str | int, ...],
    listed: bool,
    source: FanInSource,
    message: str,
) -> Problem:
    """A problem at a `sources:` entry (`listed`) or at the partner's registry row."""
    row = source.row
    if listed or row is None:
        return doc.problem(where, message)
    return row.cells["name"].problem(message)


def _registry_sources(
    name: str,
    body: FanInConfig,
    model: ConnectorConfig,
    adapters: Mapping[str, type[Adapter]],
    settings: dict[str, AdapterSettings],
    base_dir: Path,
    problems: list[Problem],
) -> list[FanInSource]:
    """The registry partners' sources: each a connection ``FANIN.PARTNER`` rendered from
    the template with the partner's row and checked by the adapter's settings model."""
    template = body.partners
    assert template is not None
    adapter = adapters.get(template.source.adapter)
    if adapter is None:
        hint = did_you_mean(template.source.adapter, adapters)
        problems.append(
            Problem(
                "connector.yaml",
                None,
                None,
                f"fan_in.{name}.partners.source.adapter: unknown adapter "
                f"{template.source.adapter!r}{hint}",
            )
        )
        return []
    try:
        rows = read_registry(template.registry)
    except ConfigValidationError as err:
        problems += err.problems
        return []
    from connector_core.templates import policy_columns

    columns = policy_columns(template.policy)
    sources = []
    for row in rows:
        found = [p for c in columns if (p := param_value(row, c, template.policy.name)[1])]
        connection = partner_job_name(name, row.name)
        values = render_settings(
            template.source.settings, row, f"fan_in.{name}.partners.source.settings", found
        )
        if not found:
            try:
                settings[connection] = adapter.settings_model.model_validate(
                    values, context={"base_dir": base_dir}
                )
            except ValueError as err:
                from connector_core.templates import _plain_errors

                message = f"partner {row.name!r}: the source settings of fan-in {name!r} are "
                found += [
                    row.cells["name"].problem(f"{message}not valid for this partner: {line}")
                    for line in _plain_errors(err)
                ]
        problems += found
        if found:
            continue
        model.connections[connection] = ConnectionConfig(
            adapter=template.source.adapter,
            description=f"partner {row.name} of fan-in {name}",
            settings=values,
            mapping=template.source.mapping,
        )
        sources.append(FanInSource(row.name, connection, template.policy, row))
    return sources


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text
