"""Schema drift is a configuration error: check a job's source before anything is written.

A run refuses to start (``ConfigError``, exit 3) when the source connection maps an entry
the admin wrote to a column or field the live source does not have, when its key is
missing, when the job's policy tests or shows a field the source does not provide, or when
the policy requires a consent purpose the source carries no evidence of. Each of those made
a run withhold (and so delete) everyone, or blank a field at every recipient.

The source tells what it has through :meth:`Adapter.available_fields`; adapters that cannot
tell (the default) are not checked. Messages name the file and line to fix, the missing
name and the names that exist; never a field value.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from connector_core.adapters import Adapter, MissingField, SourceFields
from connector_core.config import Config
from connector_core.errors import AdapterError, ConfigValidationError, Problem
from connector_core.policy.compiler import CompiledPolicy, Link, Resolution
from connector_core.query import All, AnyOf, Compare, Condition, Not, matches
from connector_core.records import FIELDS, is_extra
from connector_core.yaml_errors import load_yaml

log = logging.getLogger("connector.sync")

HINT = (
    "The source no longer matches connector.yaml or the policy: fix the lines above "
    "(or the source), then run `connector doctor`. Nothing was written."
)
_SHOWN_NAMES = 15
#: Fields every record has, whatever the source maps.
_ALWAYS = frozenset({"id", "consent"})
#: A record deleted at a source that cannot say so is missing from its next full read and
#: taken back then: a floor's forbid on it needs no warning.
_TAKEN_BACK_ANYWAY = frozenset({"deleted"})


@dataclasses.dataclass(frozen=True, slots=True)
class Need:
    """A field (or ``consent.<purpose>``) a policy needs from the source, and where."""

    field: str
    path: Path
    line: int | None
    what: str
    severity: str = "error"


@dataclasses.dataclass
class SchemaReport:
    """The outcome of :func:`check_source`: errors refuse the run, warnings are shown."""

    connection: str
    fields: SourceFields | None
    errors: list[Problem] = dataclasses.field(default_factory=list)
    warnings: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def checked(self) -> bool:
        """False when the adapter cannot tell what its source holds."""
        return self.fields is not None

    def raise_for_errors(self) -> None:
        """Raise ConfigValidationError (exit 3) listing every error (warnings: doctor)."""
        for warning in self.warnings:
            log.debug("%s", warning)
        if self.errors:
            raise ConfigValidationError(self.errors, hint=HINT)


def check_source(
    config: Config, connection: str, adapter: Adapter, policy: CompiledPolicy
) -> SchemaReport:
    """Check that `adapter` (connection `connection`) gives `policy` what it tests and shows.

    Raises:
        AdapterError: the source could not be reached to list its fields.
    """
    return check_fields(config, connection, adapter.available_fields(), adapter.name, policy)


class SourceChecks:
    """:func:`check_source` for many jobs, listing each source connection's fields once.

    Jobs sharing a source (``run --all``, ``--due``, the scheduler) so open it once for the
    check, whatever their number; a source that cannot be listed fails each of its jobs
    with the same error.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._found: dict[str, SourceFields | AdapterError | None] = {}
        # by connection and policy object: partner jobs sharing a compiled policy share it;
        # and by connection and what the policy needs: a template's partners, whose policies
        # differ in their values alone, need the same
        self._reports: dict[tuple[str, CompiledPolicy], SchemaReport] = {}
        self._by_needs: dict[tuple[str, tuple[Need, ...]], SchemaReport] = {}
        self._files = PolicyFiles(config.model.network.floor)  # each partner's: one file

    def check(self, connection: str, adapter: Adapter, policy: CompiledPolicy) -> SchemaReport:
        """The report of :func:`check_source` for one job reading `connection`.

        Raises:
            AdapterError: the source could not be reached to list its fields.
        """
        if connection not in self._found:
            try:
                self._found[connection] = adapter.available_fields()
            except AdapterError as exc:
                self._found[connection] = exc
        found = self._found[connection]
        if isinstance(found, AdapterError):
            raise found
        key = (connection, policy)
        report = self._reports.get(key)
        if report is None:
            needs = () if found is None else tuple(policy_needs(policy, files=self._files))
            report = self._by_needs.get((connection, needs))
            if report is None:
                report = _check_needs(self.config, connection, found, adapter.name, needs)
                self._by_needs[connection, needs] = report
            self._reports[key] = report
        return report


def check_fields(
    config: Config,
    connection: str,
    found: SourceFields | None,
    adapter: str,
    policy: CompiledPolicy,
    files: PolicyFiles | None = None,
) -> SchemaReport:
    """Check what a source listed (`found`, from its :meth:`Adapter.available_fields`;
    None when it cannot tell) against connection `connection` and `policy` (`files`: see
    :func:`policy_needs`)."""
    needs = policy_needs(policy, config.model.network.floor, files)  # read only if found
    return _check_needs(config, connection, found, adapter, needs)


def _check_needs(
    config: Config,
    connection: str,
    found: SourceFields | None,
    adapter: str,
    needs: Iterable[Need],
) -> SchemaReport:
    """:func:`check_fields` of a policy that needs `needs` (see :func:`policy_needs`)."""
    report = SchemaReport(connection, found)
    if found is None:
        return report
    wrong = [m for m in found.missing if m.canonical == "id" or _written(config, connection, m)]
    report.errors += [_mapping_problem(config, connection, found, m) for m in wrong]
    reported = {m.canonical for m in wrong}
    missing = {m.canonical: m for m in found.missing}
    for need in needs:
        if _provided(need.field, found.provided) or need.field in reported:
            continue
        problem = _policy_problem(need, connection, adapter, found, missing.get(need.field))
        (report.errors if need.severity == "error" else report.warnings).append(problem)
    report.errors = _unique(report.errors)
    report.warnings = _unique(report.warnings)
    return report


def _provided(field: str, provided: frozenset[str]) -> bool:
    if field in provided or field in _ALWAYS:
        return True
    return field.startswith("consent.") and "consent" in provided  # one property, any purpose


class PolicyFiles:
    """What checking policies reads from their files, read once per file for many checks
    (thousands of partner jobs share one template's policy and the network floor): whether
    a file is the floor, and the lines of its ``require_consent`` entries."""

    def __init__(self, floor: Path | None) -> None:
        self._floor = None if floor is None else floor.resolve()
        self._is_floor: dict[Path, bool] = {}
        self._consents: dict[tuple[Path, tuple[str, ...]], tuple[Need, ...]] = {}
        # by the id of what is shared by many compiled policies (the floor's link, a
        # template's resolutions), kept with it so that the id is not reused
        self._shared: dict[int, tuple[object, tuple[Need, ...]]] = {}

    def is_floor(self, path: Path) -> bool:
        """True when `path` is the network floor's file."""
        found = self._is_floor.get(path)
        if found is None:
            found = self._is_floor[path] = self._floor is not None and path.resolve() == self._floor
        return found

    def shared(self, of: object, needs: Callable[[], Iterator[Need]]) -> tuple[Need, ...]:
        """`needs()` of `of` (a link or a policy's resolutions), made once per object."""
        found = self._shared.get(id(of))
        if found is None:
            found = self._shared[id(of)] = (of, tuple(needs()))
        return found[1]

    def consent_needs(self, link: Link) -> tuple[Need, ...]:
        """The consent purposes `link` requires, with their lines."""
        key = (link.policy.path, tuple(link.policy.require_consent))
        found = self._consents.get(key)
        if found is None:
            found = self._consents[key] = tuple(_consent_needs(link))
        return found


def policy_needs(
    policy: CompiledPolicy, floor: Path | None = None, files: PolicyFiles | None = None
) -> Iterator[Need]:
    """What a compiled policy (and its chain) tests, requires and shows, with locations.

    A forbid rule of the network `floor` that can only fire when its field has a value is
    a warning when the source lacks the field (it withholds nobody from that source): the
    floor is written once for every source of the network. `files` keeps what the policy
    files said for later calls (it must be made for the same `floor`).
    """
    files = PolicyFiles(floor) if files is None else files
    for link in policy.links:
        yield from files.consent_needs(link)
        if files.is_floor(link.policy.path):  # one Link for a load's policies
            yield from files.shared(link, functools.partial(_rule_needs, link, True))
        else:
            yield from _rule_needs(link, False)
    yield from files.shared(policy.resolutions, functools.partial(_shown, policy.resolutions))


def _shown(resolutions: Mapping[str, Resolution]) -> Iterator[Need]:
    """The fields a policy shows or masks, with the line saying so."""
    for name, resolution in resolutions.items():
        if resolution.outcome.kind not in ("show", "mask") or name in _ALWAYS:
            continue
        for source in resolution.sources:
            outcome = source.outcome
            if outcome is not None and outcome.kind in ("show", "mask") and source.key == name:
                verb = "shows" if outcome.kind == "show" else "masks"
                yield Need(name, source.path, outcome.line, f"{verb} {name}")


def _consent_needs(link: Link) -> Iterator[Need]:
    path = link.policy.path
    if not link.policy.require_consent:
        return
    doc = load_yaml(path)  # the policy keeps no line for these; its file does
    for index, purpose in enumerate(link.policy.require_consent):
        mark = doc.locate(("require_consent", index))
        line = mark[0] if mark else None
        yield Need(f"consent.{purpose}", path, line, f"requires consent {purpose!r}")


def _rule_needs(link: Link, is_floor: bool) -> Iterator[Need]:
    for rule in link.rules:
        for field in dict.fromkeys(_fields(rule.condition)):
            what = f"{rule.kind} rule {rule.name!r} tests {field}"
            harmless = (  # of the floor alone: a rule of another policy needs its field
                is_floor and rule.kind == "forbid" and not _fires_without(rule.condition, field)
            )
            if harmless and field in _TAKEN_BACK_ANYWAY:
                continue
            severity = "warning" if harmless else "error"
            yield Need(field, link.policy.path, rule.line, what, severity)


def _fields(condition: Condition | None) -> Iterator[str]:
    """Canonical names a condition tests (``consent.<purpose>`` for consent paths)."""
    match condition:
        case Compare(field):
            yield _canonical(field)
        case All(items) | AnyOf(items):
            for item in items:
                yield from _fields(item)
        case Not(item):
            yield from _fields(item)


def _canonical(path: str) -> str:
    if path in FIELDS or is_extra(path):
        return path
    head, _, rest = path.partition(".")
    if head == "consent" and rest:
        return "consent." + rest.split(".", 1)[0]
    return head


def _fires_without(condition: Condition | None, field: str, negated: bool = False) -> bool:
    """True when a record lacking `field` could make `condition` hold because of it."""
    match condition:
        case None:
            return False
        case Compare(path, op, value) if _canonical(path) == field:
            return matches(Compare(path, op, value), {}) != negated
        case All(items) | AnyOf(items):
            return any(_fires_without(item, field, negated) for item in items)
        case Not(item):
            return _fires_without(item, field, not negated)
    return False


def _written(config: Config, connection: str, missing: MissingField) -> bool:
    """True when the admin wrote this entry in connector.yaml (not an adapter default)."""
    return config.document.get(("connections", connection, *missing.setting)) is not None


def _mapping_problem(
    config: Config, connection: str, found: SourceFields, missing: MissingField
) -> Problem:
    loc = ("connections", connection, *missing.setting)
    message = (
        f"{'.'.join(loc)}: {missing.native!r} is not in {found.source}"
        f"{_suggest_for(missing, found.native)}; {_existing(found)}. Fix: name one "
        f"that exists, or remove the entry if the source no longer carries {missing.canonical}"
    )
    if missing.canonical == "id":
        message += " (every record needs its key)"
    if missing.note:
        message += f" ({missing.note})"
    return config.document.problem(loc, message)


def _policy_problem(
    need: Need, connection: str, adapter: str, found: SourceFields, missing: MissingField | None
) -> Problem:
    if need.severity != "error":
        message = (
            f"{need.what}, which connection {connection!r} does not provide: the rule "
            f"withholds nobody read from it (to apply it, map {need.field} under "
            f"connections.{connection}.mapping)"
        )
        return Problem(str(need.path), need.line, None, message, severity=need.severity)
    message = f"{need.what}, which connection {connection!r} does not provide "
    message += f"({_lacks(need, found, missing)}). Fix: "
    if need.field.startswith("consent."):
        message += (
            f"tell connection {connection!r} where it keeps this consent "
            f"(docs/adapters/{adapter}.md), or remove the requirement"
        )
    else:
        message += (
            f"map it under connections.{connection}.mapping ({need.field}: <name>), "
            "or change the policy"
        )
    return Problem(str(need.path), need.line, None, message)


def _lacks(need: Need, found: SourceFields, missing: MissingField | None) -> str:
    """Why the source does not provide a needed field: a mapped name it lacks, or none."""
    if missing is None:
        return f"it maps nothing to {need.field}" + _suggest(
            need.field.rsplit(".", 1)[-1], found.native
        )
    lacks = f"{found.source} has no {missing.native!r}{_suggest_for(missing, found.native)}"
    return lacks + (f"; {missing.note}" if missing.note else "")


def _suggest_for(missing: MissingField, names: Iterable[str]) -> str:
    """A suggestion close to the missing name, else to its canonical field (Town -> City)."""
    names = list(names)
    found = _suggest(missing.native, names)
    if not found and missing.canonical != "id":
        found = _suggest(missing.canonical.rsplit(".", 1)[-1].replace("_", " "), names)
    return found


def _suggest(name: str, names: Iterable[str]) -> str:
    choices = [n for n in names if n]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not close:  # 'Phone number' for 'Phone': one name holds the other
        low = name.lower()
        close = sorted((n for n in choices if low in n.lower() or n.lower() in low), key=len)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _existing(found: SourceFields) -> str:
    names = list(found.native)
    if not names:
        return "it lists no names"
    shown = ", ".join(repr(n) for n in names[:_SHOWN_NAMES])
    more = f" and {len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else ""
    return f"it has {shown}{more}"


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
