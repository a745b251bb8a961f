"""Running a fan-in: many partners' sources into one target, one record per person.

A run of a fan-in (:class:`~connector_core.fanin.FanIn`) reads every partner's source
completely, decides each record with the partner's own policy, matches people across
partners and writes the merged records through the ordinary runner
(:func:`~connector_core.sync.runner.new_run`): intent log, id map, ledger, mass-delete guard,
fenced locks, all as for any job. The merged records are the runner's "source": their ids
are the people's keys.

The rules (docs/partners.md, "Fan-in"):

- **Matching.** A record's keys are HMACs, under the network's target-key secret, of its
  normalised email and phone (:func:`~connector_core.fanin.normal_email`,
  :func:`~connector_core.fanin.normal_phone`), as the fan-in's ``match:`` says. Records
  sharing a key, at one partner or several, are one person; the person's id is the smallest
  of its email keys (else of its phone keys). A record with no key goes nowhere. No email or
  phone is stored: the state store holds keys only.
- **Contribution.** A partner's record contributes when the partner's policy shares it and
  it grants the fan-in's purpose; what it contributes is the partner policy's projection.
- **Consent.** A person goes up only if some record contributes, no partner's record of them
  says no to the purpose and they are not on the suppression list. Otherwise they are
  taken back at once, as a withdrawal (a stated no, or the national list, is evidence).
  The merged consent per purpose is no if any record of the person (at any partner read)
  says no, else yes only if every contribution used says yes, else absent: the target's
  policy (which must require the purpose) then decides.
- **Fields.** The merged record holds the union of the contributions' fields; each field's
  value comes from the first contribution (by partner name, then source id) that has it.
  The ledger's reason names, for every shared field, the partner it came from.
- **Withdrawal by one partner** (its policy no longer shares the record, or the record
  left a complete read of its source, or the partner left connector.yaml or its registry)
  removes that partner's contribution only: the person is rewritten from the others, and
  taken back (under the mass-delete guard, as ``missing-at-source``) when none remains.
- **A failing partner** (its read failed, its schema drifted, it read empty while it had
  contributed before, a record without a key could not be read) keeps its contributions:
  each person it contributed to stays as the target holds it (reported as a problem, exit
  status 1), unless another partner's contribution to that person changed (then the person
  is rewritten from the partners that could be read: narrower, never wider) or the person
  must be taken back. Such a person is matched by the keys the partner's records had, so
  a record read now that shares one is theirs (same id; its no reaches them). The failing
  partner's own refusals (:data:`REFUSAL` rows) still hold. The other partners go on.
- **The suppression list** (``suppress:``) is read first; if it cannot be read, nothing is
  written (a run must know who said no before sharing anybody).

Contributions are saved after a run that was not stopped, in one transaction
(:data:`~connector_core.sync.tables.fan_in_contributions`): what a partner gave, by its source
id, as the person's key, the fields and a salted hash; never a value. A record that gave
nothing and said no is saved as a refusal: its keys and the purposes it refused.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa

from connector_core.adapters import Adapter, Capability, Page, SourceFields
from connector_core.config import Config, JobConfig
from connector_core.errors import ConfigError, ConnectorError, RecordRejected
from connector_core.fanin import FanIn, FanInSource, normal_email, normal_phone
from connector_core.hookspecs import MaskFactory
from connector_core.masks import MaskContext
from connector_core.policy.compiler import CompiledPolicy, Decision, compile_policy
from connector_core.records import Record, usable_id
from connector_core.sync import dialect
from connector_core.sync.dialect import chunks
from connector_core.sync.job import (
    JobOptions,
    LoadedJob,
    PolicyCache,
    fingerprint,
    key_secret,
    load_job_policy,
)
from connector_core.sync.keys import TargetKeys, canonical_json
from connector_core.sync.runner import JobRun, RunResult, fewer_collections, new_run
from connector_core.sync.schema_check import check_source
from connector_core.sync.state import StateStore
from connector_core.sync.tables import fan_in_contributions
from connector_core.yaml_errors import validate

__all__ = ["Contribution", "load_fan_in", "people_of", "run_fan_in", "strictest"]

log = logging.getLogger("connector.sync")

#: The cursor a fan-in's runs store: every run reads every partner completely.
CURSOR = "fan-in"
#: Fields a partner's contribution never sets: the merged record's own.
_OWN = frozenset({"id", "consent", "deleted", "merged_into"})
_READ = frozenset({"id", "email", "phone", "deleted", "consent"})
#: The digest of a stored refusal: a record that gave nothing and said no to some purpose
#: (its ``fields`` map each such purpose to ``"no"``). Kept like a contribution, so that a
#: partner's no still holds while the partner cannot be read.
REFUSAL = "refusal"


@dataclasses.dataclass(frozen=True)
class Contribution:
    """What one partner record gives a person (its values stay in memory, never stored)."""

    partner: str
    source_id: str
    person: str
    values: Mapping[str, Any]
    fields: Mapping[str, str]  # field -> outcome label
    consent: Mapping[str, Any]
    digest: str
    keys: tuple[str, ...] = ()  # the record's match keys


@dataclasses.dataclass
class _Partner:
    """One partner's read: its records' keys, contributions and refusals, or its failure."""

    source: FanInSource
    failed: str | None = None
    keys: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # source id -> keys
    given: dict[str, tuple[Mapping[str, Any], Mapping[str, str], Mapping[str, Any]]] = (
        dataclasses.field(default_factory=dict)
    )
    refused: set[str] = dataclasses.field(default_factory=set)  # said no to the purpose
    #: the purposes each record says no to (any purpose: the strictest consent counts them)
    refusals: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    pinned: set[str] = dataclasses.field(default_factory=set)  # unreadable, with a key
    #: records its policy could not be applied to: (source id, error, the record's values)
    rejected: list[tuple[str, str, list[Any]]] = dataclasses.field(default_factory=list)
    read: int = 0


class _Merged(Adapter):
    """The runner's view of a fan-in's merged records (fed by :func:`run_fan_in`)."""

    name: ClassVar[str] = "fan_in"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.READ})

    def read(self, **_: Any) -> Iterator[Page]:
        """Never called: :func:`run_fan_in` feeds the run itself."""
        return iter(())


@dataclasses.dataclass
class LoadedFanIn:
    """A fan-in ready to run: the target's job, the partners' adapters and policies."""

    fan_in: FanIn
    config: Config
    job: LoadedJob
    partners: list[tuple[FanInSource, Adapter | None, CompiledPolicy | None, str | None]]
    suppress: Adapter | None
    #: person -> field -> the partner its value came from (for the ledger's reasons)
    sources: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def close(self) -> None:
        """Close every adapter."""
        for _, adapter, _, _ in self.partners:
            if adapter is not None:
                adapter.close()
        if self.suppress is not None:
            self.suppress.close()
        self.job.close()


def load_fan_in(
    config: Config,
    name: str,
    *,
    masks: Mapping[str, MaskFactory] | None = None,
    context: MaskContext | None = None,
) -> LoadedFanIn:
    """Load the fan-in `name`: its target's policy and adapter, each partner's policy and
    source. A partner whose policy or source cannot be loaded is kept as failed (its
    contributions stay); the target's policy must require the fan-in's purpose.

    Raises:
        ConfigError: no such fan-in, or its target's policy does not require its purpose.
    """
    fan_in = config.fan_ins.get(name)
    if fan_in is None:
        raise ConfigError(
            f"no fan-in named {name!r} in {config.path}",
            hint=f"Defined fan-ins: {', '.join(config.fan_ins) or 'none'}.",
        )
    body = fan_in.body
    policy = compile_policy(
        load_job_policy(config, body.policy, masks), masks=masks, context=context
    )
    required = {p for link in policy.links for p in link.policy.require_consent}
    if body.purpose not in required:
        raise ConfigError(
            f"fan-in {name!r}: its policy {body.policy} does not require the fan-in's purpose "
            f"{body.purpose!r}",
            hint=f"Add `require_consent: [{body.purpose}]` to {body.policy.name}.",
        )
    with contextlib.ExitStack() as opened:  # close what was opened if anything fails
        policies = PolicyCache(config, masks, context)
        partners = [_load_partner(config, source, policies) for source in fan_in.sources]
        for _, adapter, _, _ in partners:
            if adapter is not None:
                opened.callback(adapter.close)
        suppress = None if body.suppress is None else config.open_adapter(body.suppress)
        if suppress is not None:
            opened.callback(suppress.close)
        target = config.open_adapter(body.target)
        opened.pop_all()
    job_config = JobConfig(
        source=f"fan-in:{name}", target=body.target, policy=body.policy, schedule=body.schedule
    )
    partner_hashes = {s.partner: (p.content_hash if p else None) for s, _, p, _ in partners}
    job = LoadedJob(
        name=name,
        config=job_config,
        source=_Merged(target.settings, connection=f"fan-in:{name}"),
        target=target,
        policy=policy,
        config_hash=_digest(
            {"target": fingerprint(config, target), "partners": partner_hashes, **_settings(fan_in)}
        ),
        target_hash=_digest(fingerprint(config, target)),
        options=validate(config.document, JobOptions, prefix=("fan_in", name, "options")),
        key_secret=key_secret(config),
        approvers=config.model.approvers,
    )
    loaded = LoadedFanIn(fan_in, config, job, partners, suppress)
    job.policy = _explaining(policy, loaded.sources)
    return loaded


def _load_partner(
    config: Config, source: FanInSource, policies: PolicyCache
) -> tuple[FanInSource, Adapter | None, CompiledPolicy | None, str | None]:
    """A partner's source and compiled policy, or why it cannot be read this run."""
    try:
        policy = policies.compiled(source.policy, source.row)
        adapter = config.open_adapter(source.connection)
    except ConnectorError as exc:
        return source, None, None, str(exc)
    return source, adapter, policy, None


def _settings(fan_in: FanIn) -> dict[str, Any]:
    body = fan_in.body
    return {"match": body.match, "phone_country": body.phone_country, "purpose": body.purpose}


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _explaining(policy: CompiledPolicy, sources: Mapping[str, Mapping[str, str]]) -> CompiledPolicy:
    """`policy` whose shares' reasons also name which partner gave which shared field
    (``shared:all (fan-in: bristol=city; leeds=email,first_name)``, kept by the ledger);
    everything else is the policy's own."""
    base = policy.evaluate

    def evaluate(record: Record) -> tuple[Decision, Record | None]:
        decision, projection = base(record)
        given = sources.get(str(record.get("id")))
        if projection is None or not given:
            return decision, projection
        return dataclasses.replace(
            decision, reason=_reason(decision, projection, given)
        ), projection

    wrapped = copy.copy(policy)
    wrapped.evaluate = evaluate
    return wrapped


# -- the run ---------------------------------------------------------------------------


def run_fan_in(
    loaded: LoadedFanIn,
    store: StateStore,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    accept_deletes: int = 0,
    lock: bool = True,
) -> RunResult:
    """Run the fan-in once: read every partner, merge, write the target, save contributions.

    Raises:
        JobLocked, TargetLocked: another process runs this fan-in or writes its target.
    """
    job = loaded.job
    run = new_run(job, store, dry_run=dry_run, now=now, accept_deletes=accept_deletes)
    if dry_run or not lock:
        return _execute(loaded, store, run, dry_run, accept_deletes)
    with store.lock(job.name, target=job.config.target):
        return _execute(loaded, store, run, dry_run, accept_deletes)


def _execute(
    loaded: LoadedFanIn, store: StateStore, run: JobRun, dry_run: bool, accept: int
) -> RunResult:
    keys = _Keys(loaded, store)
    run.begin(reconcile=None)
    reads: list[_Partner] = []
    stored: dict[str, dict[str, dict[str, Any]]] = {}
    merger: _Merger | None = None
    held: set[str] = set()
    try:
        with fewer_collections():
            suppressed = _suppressed(loaded, keys)
            stored = _stored(store, loaded.fan_in.name)
            held = _held_partners(loaded, run, stored, accept)
            reads = [_read_partner(loaded, p, keys, stored) for p in loaded.partners]
            for read in reads:
                if read.failed is not None:
                    _report(run, loaded, read.failed)
                for source_id, error, values in read.rejected:  # scrubbed of the values
                    run.fail(f"{read.source.partner}:{source_id}", error, values)
            merger = _Merger(loaded, reads, stored, suppressed, keys, held)
            for page in merger.pages():
                run.feed(page)
            run.end()
    except ConnectorError as exc:
        run.abort(exc)
    except BaseException as exc:
        run.crashed(exc)
        raise
    result = run.finish()
    if result.error is None and not dry_run and merger is not None:
        _save(store, loaded.fan_in, reads, stored, merger.rows, run.now, held)
    return result


def _held_partners(
    loaded: LoadedFanIn, run: JobRun, stored: Mapping[str, Any], accept: int
) -> set[str]:
    """The partners that left the fan-in (its ``sources:`` or its registry) but keep their
    part this run: more left at once than its limit (5, or 10% of its partners if more),
    as a truncated registry export would look, and `accept` does not cover them. Their
    contributions stay, the run says so and exits 5 (as held deletes)."""
    gone = sorted(p for p in stored if p not in loaded.fan_in.partners)
    limit = max(5, (len(loaded.fan_in.partners) + len(gone)) // 10)
    if len(gone) <= max(limit, accept):
        return set()
    total = len(loaded.fan_in.partners) + len(gone)
    run.result.problems.append(
        f"{len(gone)} of its {total} partners left at once, more than its limit of {limit}: "
        f"their contributions are kept (check the partners; if they really left, run again "
        f"with --accept-deletes {len(gone)})"
    )
    run.counts.held += len(gone)
    return set(gone)


def _report(run: JobRun, loaded: LoadedFanIn, failure: str) -> None:
    """Report a partner that could not be read (a problem: the run exits 1)."""
    run.result.problems.append(failure)
    run.counts.problems += 1
    log.warning("fan-in %s: %s", loaded.fan_in.name, failure, extra={"job": loaded.fan_in.name})


class _Keys:
    """The fan-in's match keys: HMACs under the network's target-key secret, one key
    function per kind, so an email and a phone number never share a key."""

    def __init__(self, loaded: LoadedFanIn, store: StateStore) -> None:
        secret = loaded.job.key_secret if loaded.job.key_secret is not None else store.key_secret()
        name = loaded.fan_in.name
        self.email = TargetKeys(f"fan-in\0{name}\0email", secret)
        self.phone = TargetKeys(f"fan-in\0{name}\0phone", secret)
        self.match = loaded.fan_in.body.match
        self.country = loaded.fan_in.body.phone_country
        self._digest = hashlib.blake2b(  # a keyed hash: MACs many values fast
            f"fan-in\0{name}\0digest".encode(), key=hashlib.sha256(secret).digest(), digest_size=16
        )

    def digest(self, values: Mapping[str, Any]) -> str:
        """A keyed hash of what a contribution gives (stored instead of the values)."""
        mac = self._digest.copy()
        mac.update(canonical_json(values).encode("utf-8", "surrogatepass"))
        return mac.hexdigest()

    def __call__(self, record: Mapping[str, Any]) -> list[str]:
        """The record's keys: its email's first, then its phone's."""
        found = []
        if "email" in self.match and (email := normal_email(record.get("email"))):
            found.append("e" + self.email(email))
        if "phone" in self.match and (phone := normal_phone(record.get("phone"), self.country)):
            found.append("p" + self.phone(phone))
        return found


def _suppressed(loaded: LoadedFanIn, keys: _Keys) -> frozenset[str]:
    """The keys of the people on the suppression list. Raises ConnectorError if it cannot
    be read completely: then nobody is shared (nothing says who said no)."""
    adapter = loaded.suppress
    if adapter is None:
        return frozenset()
    found: set[str] = set()
    keyless = 0  # rows that match nobody: could be anybody's no
    for page in adapter.read(cursor=None, fields=_READ, where=None):
        if page.problems:
            raise ConfigError(
                f"fan-in {loaded.fan_in.name!r}: the suppression list {adapter.connection!r} "
                f"has {len(page.problems)} unreadable record(s); nothing was shared",
                hint="Fix the list (`connector doctor` shows where); a run shares nobody "
                "while it cannot tell who said no.",
            )
        for record in page.records:
            matched = keys(record)
            found.update(matched)
            keyless += not matched
    if keyless:
        match = " or ".join(loaded.fan_in.body.match)
        raise ConfigError(
            f"fan-in {loaded.fan_in.name!r}: {keyless} row(s) of the suppression list "
            f"{adapter.connection!r} give no {match} to match by (a renamed column, an "
            "entry that is not an address or number, a blank row); nothing was shared",
            hint=f"Give every row of the list an {match} as the partners write them "
            f"(its mapping names the columns); a run shares nobody while it cannot tell "
            "who said no.",
        )
    return frozenset(found)


def _stored(store: StateStore, name: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The stored contributions of fan-in `name`: partner -> source id -> row."""
    table = fan_in_contributions
    names = ("partner", "source_id", "person", "fields", "keys", "digest")
    query = sa.select(*(table.c[n] for n in names)).where(table.c.job == name)
    found: dict[str, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
    with store._transaction() as conn:
        for values in conn.execute(query):
            row = dict(zip(names, values, strict=True))
            found[row["partner"]][row["source_id"]] = row
    return found


def people_of(store: StateStore, source_id: str) -> list[str]:
    """The people (their keys, the fan-ins' source ids) a partner record `source_id` of any
    fan-in contributed to: so that ``connector who-has`` finds what went up from it."""
    table = fan_in_contributions
    query = (
        sa.select(table.c.person)
        .where(table.c.source_id == source_id, table.c.digest != REFUSAL)
        .distinct()
    )
    with store._transaction() as conn:
        return sorted(conn.scalars(query))


def _read_partner(
    loaded: LoadedFanIn,
    partner: tuple[FanInSource, Adapter | None, CompiledPolicy | None, str | None],
    keys: _Keys,
    stored: Mapping[str, Mapping[str, Any]],
) -> _Partner:
    """Read one partner's source completely and decide every record with its policy; a
    failure of this partner is noted, never raised."""
    source, adapter, policy, error = partner
    read = _Partner(source)
    if adapter is None or policy is None:
        read.failed = _failure(source, error or "it could not be loaded")
        return read
    try:
        report = check_source(loaded.config, source.connection, adapter, policy)
        report.raise_for_errors()
        lost = _lost_match_fields(loaded, report.fields, stored.get(source.partner, {}))
        if lost:
            read.failed = _failure(
                source,
                f"its source no longer provides {' or '.join(lost)}, which its people were "
                "matched by (check its columns and mapping); its contributions are kept",
            )
            return read
        fields = policy.pushdown.decision_fields | policy.pushdown.shared_fields | _READ
        for page in adapter.read(cursor=None, fields=fields, where=None):
            _take_page(read, page, policy, keys, loaded.fan_in.body.purpose)
    except ConnectorError as exc:
        read.failed = _failure(source, str(exc))
        return read
    if read.read == 0 and not read.pinned and stored.get(source.partner):
        read.failed = _failure(source, "its source read empty; its contributions are kept")
    elif read.read and not read.keys:
        reason = f"none of its {read.read} record(s) has an email or phone to match people by"
        read.failed = _failure(source, reason + " (check its mapping)")
    return read


def _lost_match_fields(
    loaded: LoadedFanIn, found: SourceFields | None, stored: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The match fields (email, phone) the partner's stored records were matched by that
    its live source no longer provides (a key is "e" or "p" and a digest): without them its
    people would look gone."""
    if found is None:  # the adapter cannot tell
        return []
    kinds = {key[0] for row in stored.values() for key in row["keys"]}
    return [
        field
        for field in loaded.fan_in.body.match
        if field[0] in kinds and field not in found.provided
    ]


def _failure(source: FanInSource, error: str) -> str:
    return f"partner {source.partner!r} ({source.connection}) not read: {error}"


def _reason(decision: Decision, projection: Record, given: Mapping[str, str]) -> str:
    by_partner: dict[str, list[str]] = collections.defaultdict(list)
    for field, value in projection.items():
        if value is not None and field in given:
            by_partner[given[field]].append(field)
    parts = "; ".join(f"{p}={','.join(fields)}" for p, fields in sorted(by_partner.items()))
    return f"{decision.reason} (fan-in: {parts})" if parts else decision.reason


def _granted(state: Any) -> bool:
    return isinstance(state, dict) and state.get("granted") is True


def _refuses(state: Any) -> bool:
    return isinstance(state, dict) and state.get("granted") is False


def _take_page(
    read: _Partner, page: Page, policy: CompiledPolicy, keys: _Keys, purpose: str
) -> None:
    """Note one page of a partner's read: its records' keys, contributions and refusals."""
    for problem in page.problems:
        if not usable_id(problem.key):  # could be anybody: nobody may count as gone from it
            raise _Unreadable("a record without a usable key could not be read")
        read.pinned.add(str(problem.key))
    for record in page.records:
        source_id = record.get("id")
        if not usable_id(source_id):
            raise _Unreadable("a record without a usable id")
        source_id = str(source_id)
        read.read += 1
        found = keys(record)
        if not found:
            continue  # nothing to match the person by: they go nowhere
        read.keys[source_id] = found
        consent = record.get("consent")
        consent = consent if isinstance(consent, dict) else {}
        if _refuses(consent.get(purpose)):
            read.refused.add(source_id)
        said_no = frozenset(p for p, state in consent.items() if _refuses(state))
        if said_no:
            read.refusals[source_id] = said_no
        if record.get("deleted") is True or not _granted(consent.get(purpose)):
            continue
        try:
            _, projection = policy.evaluate(record)
        except RecordRejected as exc:  # a mask could not apply: held, as an unreadable record
            read.pinned.add(source_id)
            read.rejected.append((source_id, str(exc), list(record.values())))
            continue
        if projection is None:
            continue
        values = {f: v for f, v in projection.items() if v is not None and f not in _OWN}
        labels = {f: policy.outcomes[f].label() for f in values if f in policy.outcomes}
        read.given[source_id] = (values, labels, consent)


class _Unreadable(ConnectorError):
    """A partner's read that cannot say who left it."""


#: Records per page fed to the runner.
_PAGE = 1000


class _Merger:
    """Matches a run's partner records into people and makes the runner's pages."""

    def __init__(
        self,
        loaded: LoadedFanIn,
        reads: Sequence[_Partner],
        stored: Mapping[str, Mapping[str, Mapping[str, Any]]],
        suppressed: frozenset[str],
        keys: _Keys,
        held: Collection[str] = (),
    ) -> None:
        self.loaded = loaded
        self.reads = [r for r in reads if r.failed is None]
        self.stored = stored
        self.suppressed = suppressed
        self.keys = keys
        # partners that cannot be read, or left but are held: their part stays as it is
        failed = {r.source.partner for r in reads if r.failed is not None} | set(held)
        pins = {r.source.partner: r.pinned for r in self.reads}
        #: people a partner that could not be read (or a record of it) contributed to
        self.pinned: set[str] = set()
        #: their match keys, as stored (for the suppression list while they cannot be read)
        self.pinned_keys: dict[str, set[str]] = collections.defaultdict(set)
        #: per person, what the partners that could be read (or left) gave before
        self.before: dict[str, set[tuple[str, str, str]]] = collections.defaultdict(set)
        #: the stored refusals of records that could not be read: key -> (partner, purposes)
        self.kept_noes: dict[str, tuple[str, frozenset[str]]] = {}
        for partner, rows in stored.items():
            for source_id, row in rows.items():
                unread = partner in failed or source_id in pins.get(partner, ())
                if row["digest"] == REFUSAL:
                    if unread:  # its no still holds, for whoever has one of its keys
                        for key in row["keys"]:
                            self.kept_noes.setdefault(key, (partner, frozenset(row["fields"])))
                elif unread:
                    self.pinned.add(row["person"])
                    self.pinned_keys[row["person"]].update(row["keys"])
                else:
                    self.before[row["person"]].add((partner, source_id, row["digest"]))
        required = self.loaded.job.policy.links
        self.purposes = list(dict.fromkeys(p for k in required for p in k.policy.require_consent))
        #: the contributions to save: (partner, source id) -> row
        self.rows: list[dict[str, Any]] = []

    def pages(self) -> Iterator[Page]:
        """The merged records (and take-backs) of every person, in pages."""
        records: list[Record] = []
        kept: list[str] = []
        people: set[str] = set()
        for person, members in self._people():
            people.add(person)
            record = self._person(person, members, kept)
            if record is not None:
                records.append(record)
            if len(records) >= _PAGE:
                yield Page(records, cursor=CURSOR, snapshot=True)
                records = []
        for person in sorted(self.pinned - people):
            refuser = self._refuser(self.pinned_keys[person])
            if self.pinned_keys[person] & self.suppressed:
                records.append(self._withdrawal(person, "suppression-list"))
            elif refuser is not None:
                records.append(self._withdrawal(person, f"partner:{refuser}"))
            elif not self.before.get(person):
                kept.append(person)  # as the target holds it, until its partner is read
        yield Page(records, cursor=CURSOR, snapshot=True, skipped=kept)

    def _people(self) -> Iterator[tuple[str, list[tuple[_Partner, str]]]]:
        """Each person with their records (partner, source id): records sharing a key are
        one person (union-find over keys); the person's id is its smallest email key,
        else its smallest phone key."""
        parent: dict[str, str] = {}

        def find(key: str) -> str:
            root = parent.setdefault(key, key)
            while root != parent[root]:
                parent[root] = parent[parent[root]]
                root = parent[root]
            return root

        # a person of a record that could not be read is matched by the keys it had: a
        # record read now that shares one is theirs (same id, and a no reaches them)
        known = [sorted(found) for found in self.pinned_keys.values() if found]
        for found in [*known, *(f for read in self.reads for f in read.keys.values())]:
            first = find(found[0])
            for other in found[1:]:
                root = find(other)
                if root != first:
                    parent[root] = first
        groups: dict[str, list[tuple[_Partner, str]]] = collections.defaultdict(list)
        for read in self.reads:
            for source_id, found in read.keys.items():
                groups[find(found[0])].append((read, source_id))
        ids: dict[str, str] = {}
        for key in parent:
            root = find(key)
            if root not in ids or (key[0], key) < (ids[root][0], ids[root]):
                ids[root] = key
        for root, members in groups.items():
            yield ids[root], members

    def _person(
        self, person: str, members: list[tuple[_Partner, str]], kept: list[str]
    ) -> Record | None:
        keys = {k for read, source_id in members for k in read.keys[source_id]}
        used = sorted(
            (
                Contribution(
                    read.source.partner,
                    source_id,
                    person,
                    *read.given[source_id],
                    digest=self.keys.digest(read.given[source_id][0]),
                    keys=tuple(read.keys[source_id]),
                )
                for read, source_id in members
                if source_id in read.given
            ),
            key=lambda c: (c.partner, c.source_id),
        )
        self.rows.extend(_row(c) for c in used)
        self.rows.extend(
            _refusal(read.source.partner, source_id, person, read)
            for read, source_id in members
            if source_id in read.refusals and source_id not in read.given
        )
        keys |= self.pinned_keys.get(person, set())
        if keys & self.suppressed:
            return self._withdrawal(person, "suppression-list")
        refused = sorted(read.source.partner for read, sid in members if sid in read.refused)
        refuser = refused[0] if refused else self._refuser(keys)
        if refuser is not None:
            return self._withdrawal(person, f"partner:{refuser}")
        if person in self.pinned:
            now = {(c.partner, c.source_id, c.digest) for c in used}
            if now == self.before.get(person, set()):
                kept.append(person)
                return None
        if not used:
            return None  # no contribution left: taken back as missing (mass-delete guard)
        said_no = set().union(*(read.refusals.get(sid, ()) for read, sid in members))
        said_no.update(*(self.kept_noes[key][1] for key in keys if key in self.kept_noes))
        return self._merged(person, used, said_no)

    def _refuser(self, keys: Collection[str]) -> str | None:
        """The partner whose stored no to the fan-in's purpose, from a record that could not
        be read this run, holds for someone with one of `keys` (None: no such no)."""
        purpose = self.loaded.fan_in.body.purpose
        found = sorted(
            self.kept_noes[k][0]
            for k in keys
            if k in self.kept_noes and purpose in self.kept_noes[k][1]
        )
        return found[0] if found else None

    def _merged(
        self, person: str, used: Sequence[Contribution], said_no: Collection[str]
    ) -> Record:
        merged: dict[str, Any] = {"id": person}
        given: dict[str, str] = {}
        for contribution in used:
            for field, value in contribution.values.items():
                if field not in merged:
                    merged[field] = value
                    given[field] = contribution.partner
        merged["consent"] = strictest(used, said_no)
        self.loaded.sources[person] = given
        return merged

    def _withdrawal(self, person: str, why: str) -> Record:
        """A person to take back at once: every purpose the target's policy requires is
        refused, with why (``suppression-list``, ``partner:NAME``) as the evidence."""
        state = {"granted": False, "source": f"fan-in:{why}", "at": None}
        return {"id": person, "consent": dict.fromkeys(self.purposes, state)}


def _refusal(partner: str, source_id: str, person: str, read: _Partner) -> dict[str, Any]:
    """The stored refusal of a record that gave nothing and said no (:data:`REFUSAL`)."""
    return {
        "partner": partner,
        "source_id": source_id,
        "person": person,
        "fields": dict.fromkeys(sorted(read.refusals[source_id]), "no"),
        "keys": list(read.keys[source_id]),
        "digest": REFUSAL,
    }


def _row(c: Contribution) -> dict[str, Any]:
    return {
        "partner": c.partner,
        "source_id": c.source_id,
        "person": c.person,
        "fields": dict(c.fields),
        "keys": list(c.keys),
        "digest": c.digest,
    }


def strictest(used: Sequence[Contribution], said_no: Collection[str] = ()) -> dict[str, Any]:
    """The merged consent of a person: per purpose, no if any of their records at any
    partner says no (`said_no`, and the contributions' own), else yes if every contribution
    used says yes (with the oldest ``at``), else no evidence (absent)."""
    purposes = sorted({p for c in used for p in c.consent} | set(said_no))
    merged: dict[str, Any] = {}
    for purpose in purposes:
        states = [c.consent.get(purpose) for c in used]
        if purpose in said_no or any(_refuses(s) for s in states):
            merged[purpose] = {"granted": False, "source": "fan-in", "at": None}
        elif all(_granted(s) for s in states):
            times = [str(s["at"]) for s in states if isinstance(s, dict) and s.get("at")]
            at = min(times) if len(times) == len(states) else None
            partners = ",".join(dict.fromkeys(c.partner for c in used))
            merged[purpose] = {"granted": True, "source": f"fan-in:{partners}", "at": at}
    return merged


def _save(
    store: StateStore,
    fan_in: FanIn,
    reads: Sequence[_Partner],
    stored: Mapping[str, Mapping[str, Mapping[str, Any]]],
    rows: Sequence[Mapping[str, Any]],
    now: dt.datetime,
    held: Collection[str] = (),
) -> None:
    """Replace the stored contributions of every partner read (keeping those of its records
    that could not be read) and of every partner gone; a failed partner's stay. Only rows
    that changed are written."""
    ok = {r.source.partner: r for r in reads if r.failed is None}
    fresh: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows:
        fresh[row["partner"], row["source_id"]] = row
    for partner, read in ok.items():
        for source_id in read.pinned:
            kept = stored.get(partner, {}).get(source_id)
            if kept is not None:
                fresh[partner, source_id] = kept
    drop, add = [], []
    for partner, old in stored.items():
        if partner in ok or (partner not in fan_in.partners and partner not in held):
            drop += [(partner, s) for s, row in old.items() if fresh.get((partner, s)) != row]
    for (partner, source_id), row in fresh.items():
        if stored.get(partner, {}).get(source_id) != row:
            add.append({**row, "job": fan_in.name, "updated_at": now})
    if drop or add:
        _write(store, fan_in.name, drop, add)


def _write(
    store: StateStore, name: str, drop: Sequence[tuple[str, str]], add: Sequence[dict[str, Any]]
) -> None:
    table = fan_in_contributions
    with store._transaction(write=True) as conn:
        by_partner: dict[str, list[str]] = collections.defaultdict(list)
        for partner, source_id in drop:
            by_partner[partner].append(source_id)
        for partner, ids in by_partner.items():
            for chunk in chunks(ids):
                where = (table.c.job == name, table.c.partner == partner)
                conn.execute(
                    table.delete().where(*where, dialect.among(conn, table.c.source_id, chunk))
                )
        for rows in chunks(add, 1000):
            conn.execute(table.insert(), rows)
