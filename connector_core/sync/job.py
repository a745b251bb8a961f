"""Loading a job: its config block and options, both adapters, and its compiled policy.

The policy is loaded exactly as ``connector policy`` loads it (the network floor at the root
of its chain, the declared consent purposes, the extra fields the connections map), then
compiled with the installed masks and the network's hash key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector_core.adapters import Adapter, Capability
from connector_core.config import ApproverConfig, Config, JobConfig
from connector_core.errors import ConfigError
from connector_core.hookspecs import MaskFactory
from connector_core.masks import MaskContext
from connector_core.partners import PartnerRow
from connector_core.policy.compiler import CompiledPolicy, compile_policy
from connector_core.policy.loader import PolicyMemo, load_policy
from connector_core.policy.models import Policy, parse_duration
from connector_core.sync.approvals import check_approvers
from connector_core.sync.keys import TargetKeys, canonical_json, legacy_target_key
from connector_core.sync.model import JobState
from connector_core.sync.schema_check import check_source
from connector_core.yaml_errors import validate

if TYPE_CHECKING:
    from connector_core.notify import Notice

#: A shorter network.key_secret could be found by trying every value.
MIN_KEY_SECRET = 16


class JobOptions(BaseModel):
    """The ``options:`` block of a job in connector.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reconcile_every: str = Field(
        default="1d",
        description="How often a run reads the whole source to find records deleted there "
        "(e.g. 12h, 1d, 1w)",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Changes written to the target and recorded per transaction "
        "(default: the target connection's page_size)",
    )

    max_delete: int | str | None = Field(
        default=None,
        description="Most records a run may take back without a person accepting it: a "
        "number (e.g. 50) or a share of what the job holds (e.g. 5%). Default: more than 10 "
        "records and more than 10% are held back. Withdrawn consent is never held back.",
    )

    @field_validator("max_delete")
    @classmethod
    def _max_delete(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str):
            number = value.removesuffix("%").strip()
            if not value.endswith("%") or not number.replace(".", "", 1).isdigit():
                raise ValueError("give a number of records (50) or a percentage (5%)")
            if float(number) > 100:
                raise ValueError("a percentage is at most 100%")
        elif isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more")
        return value

    def delete_limit(self, holdings: int) -> int:
        """How many records a run of a job holding `holdings` may take back unasked."""
        if self.max_delete is None:
            return max(10, holdings // 10)
        if isinstance(self.max_delete, int):
            return self.max_delete
        return int(holdings * float(self.max_delete.removesuffix("%")) / 100)

    @field_validator("reconcile_every")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)  # raises ValueError with a readable message
        return value

    @property
    def reconcile_interval(self) -> dt.timedelta:
        """:attr:`reconcile_every` as a timedelta."""
        return parse_duration(self.reconcile_every)


@dataclasses.dataclass
class LoadedJob:
    """A job ready to run: its adapters are open, its policy is compiled.

    ``config_hash`` fingerprints both connections' adapter, mapping and settings: when it
    changes, the next run re-evaluates every record. ``target_hash`` fingerprints the target
    alone; it salts projection hashes, so a target mapping change rewrites every record.
    ``key_secret`` is connector.yaml's ``network.key_secret``, None when it names none (the
    state store's own secret is used then: see :meth:`target_keys`).
    """

    name: str
    config: JobConfig
    source: Adapter
    target: Adapter
    policy: CompiledPolicy
    config_hash: str
    target_hash: str = ""
    options: JobOptions = dataclasses.field(default_factory=lambda: JobOptions.model_validate({}))
    key_secret: bytes | None = dataclasses.field(default=None, repr=False)
    #: connector.yaml's declared approvers (people who may approve held change sets)
    approvers: Mapping[str, ApproverConfig] = dataclasses.field(default_factory=dict)
    #: sends an approval notice with connector.yaml's notifications: (returns problems)
    notify: Callable[[Notice], list[str]] | None = None

    def target_keys(
        self, store_secret: Callable[[], bytes], *, legacy: bool = False
    ) -> Callable[[str], str]:
        """This job's key function: under network.key_secret, else under `store_secret()`
        (the state store's own, :meth:`StateStore.key_secret`); with `legacy`, the unkeyed
        keys of earlier versions (:meth:`StateStore.legacy_keys`)."""
        if legacy:
            return functools.partial(legacy_target_key, self.name)
        secret = self.key_secret if self.key_secret is not None else store_secret()
        return TargetKeys(self.name, secret)

    def close(self) -> None:
        """Close both adapters."""
        try:
            self.source.close()
        finally:
            self.target.close()


class PolicyCache:
    """The policies of one load, loaded and compiled once: jobs (and fan-in partners) whose
    policy is one file with the same values in the registry columns it uses share one, so
    thousands of partners from one template compile it once, or once per region. Only what
    loaded is kept: a partner whose values break the policy gets its own error. Also what
    else the load's jobs share: their connections' fingerprints, the network's key secret."""

    def __init__(
        self, config: Config, masks: Mapping[str, MaskFactory] | None, context: MaskContext | None
    ) -> None:
        self.config, self.masks, self.context = config, masks, context
        self._done: dict[tuple[Any, ...], tuple[Policy, CompiledPolicy]] = {}
        self._columns: dict[Path, list[str]] = {}
        self._memo = PolicyMemo()  # the floor and a template's fields, checked once
        #: each connection's fingerprint as canonical JSON (see :func:`connection_json`):
        #: a network's national source, printed once for its 15,000 partners' config hashes
        self.prints: dict[str, str] = {}
        self._key_secret: tuple[bytes | None] | ConfigError | None = None

    def key_secret(self) -> bytes | None:
        """:func:`key_secret` of the config, resolved once for the load: a keyring look-up
        per job (0.2 ms with a plaintext keyring file, several ms over D-Bus) made 15,000
        partners' load wait for 15,000 of them. A missing secret fails every job alike."""
        found = self._key_secret
        if found is None:
            try:
                found = self._key_secret = (key_secret(self.config),)
            except ConfigError as err:
                found = self._key_secret = err
        if isinstance(found, ConfigError):
            raise found.with_traceback(None)
        return found[0]

    def load(self, path: Path, partner: PartnerRow | None) -> tuple[Policy, CompiledPolicy]:
        """The policy at `path` for `partner` (None: not a partner's), loaded and compiled;
        ConfigError/PolicyError as :func:`load_job_policy` and compile_policy raise them."""
        key = self._key(path, partner)
        found = self._done.get(key)
        if found is None:
            memo = self._memo
            loaded = load_job_policy(self.config, path, self.masks, partner=partner, memo=memo)
            compiled = compile_policy(
                loaded, masks=self.masks, context=self.context, memo=memo.resolutions
            )
            found = (loaded, compiled)
            self._done[key] = found
        return found

    def compiled(self, path: Path, partner: PartnerRow | None) -> CompiledPolicy:
        """The compiled policy of :meth:`load`."""
        return self.load(path, partner)[1]

    def _key(self, path: Path, partner: PartnerRow | None) -> tuple[Any, ...]:
        if partner is None:
            return (path,)
        columns = self._columns.get(path)
        if columns is None:
            from connector_core.templates import policy_columns

            columns = self._columns[path] = policy_columns(path)
        values = partner.values()
        return (path, *((c, repr(values.get(c))) for c in columns))


def load_job(
    config: Config,
    name: str,
    *,
    masks: Mapping[str, MaskFactory] | None = None,
    context: MaskContext | None = None,
    check_schema: bool = True,
    policies: PolicyCache | None = None,
) -> LoadedJob:
    """Load the job `name` of `config`: options, compiled policy, open source and target.

    Args:
        config: the loaded connector.yaml.
        name: the job's name.
        masks: the installed masks by name (None: the built-in ones).
        context: what masks need (the network's hash key).
        check_schema: check the source against its mapping and the policy (False only
            for a caller that runs :func:`~connector_core.sync.schema_check.check_source`
            itself to show its warnings, as ``connector doctor`` does).
        policies: policies already compiled for other jobs of this load (many partner
            jobs share one); None compiles this job's own.

    Raises:
        ConfigError: an unknown job, bad options, a policy error, a target that cannot
            write and delete (a mirror must be able to take records back), or a source
            whose fields no longer match its mapping or the policy (schema drift; see
            :mod:`connector_core.sync.schema_check`). Every run goes through here, so a
            drifted source stops the run before anything is written.
        AdapterError: the source could not be reached to list its fields.
    """
    if name in config.blocked:
        raise config.blocked[name]
    job = config.job(name)
    partner = config.partner_jobs.get(name)
    where = ("jobs", name) if partner is None else ("partners", partner.template)
    options = validate(config.document, JobOptions, prefix=(*where, "options"))
    policies = policies or PolicyCache(config, masks, context)
    loaded, policy = policies.load(job.policy, None if partner is None else partner.row)
    check_approvers(config, loaded)
    _check_target(name, job, config.adapters[job.target])
    with contextlib.ExitStack() as opened:  # close what was opened if anything fails
        source = opened.enter_context(config.open_adapter(job.source))
        target = opened.enter_context(config.open_adapter(job.target))
        if check_schema:
            check_source(config, job.source, source, policy).raise_for_errors()
        opened.pop_all()
    source_json = connection_json(config, source, policies.prints)
    target_json = connection_json(config, target, policies.prints)
    return LoadedJob(
        name=name,
        config=job,
        source=source,
        target=target,
        policy=policy,
        config_hash=config_digest(source_json, target_json),
        target_hash=_text_digest(target_json),
        options=options,
        key_secret=policies.key_secret(),
        approvers=config.model.approvers,
        notify=functools.partial(_send_notice, config),
    )


def _send_notice(config: Config, notice: Notice) -> list[str]:
    """Send `notice` by connector.yaml's notifications: channels; return the problems."""
    from connector_core.notify import send  # requests and smtplib: only to tell someone

    return send(notice, config)


def key_secret(config: Config) -> bytes | None:
    """connector.yaml's ``network.key_secret``, resolved; None when it names none.

    Raises:
        ConfigError: the secret is missing (from the keyring or the environment) or too short.
    """
    ref = config.model.network.key_secret
    if ref is None:
        return None
    value = config.secrets().resolve(ref).get_secret_value()
    if len(value) < MIN_KEY_SECRET:
        raise ConfigError(
            f"network.key_secret in {config.path} is too short ({len(value)} characters); "
            f"target keys need at least {MIN_KEY_SECRET}",
            hint="Store a long random one: `connector credentials set network key_secret` "
            "with the output of `python -c 'import secrets; print(secrets.token_hex(32))'`.",
        )
    return value.encode()


def load_job_policy(
    config: Config,
    path: Path,
    masks: Mapping[str, MaskFactory] | None = None,
    *,
    partner: PartnerRow | None = None,
    memo: PolicyMemo | None = None,
) -> Policy:
    """Load a policy as connector.yaml's network sees it: floor, purposes, mapped extras;
    for a partner's job, with the partner's values (see :mod:`connector_core.templates`);
    `memo` keeps what one load's partners share (see :class:`PolicyMemo`)."""
    model = config.model
    return load_policy(
        path,
        purposes=list(model.consent.purposes),
        masks=masks,
        extra_fields=config.extra_fields,
        floor=model.network.floor,
        partner=partner,
        memo=memo,
    )


def fingerprint(config: Config, adapter: Adapter) -> dict[str, Any]:
    """What about a connection decides the records read or written: adapter, mapping, settings."""
    model = config.settings[adapter.connection]
    neutral = type(model).neutral_settings
    settings = model.model_dump(mode="json")
    return {
        "adapter": adapter.name,
        "mapping": dict(adapter.mapping.entries),
        "settings": {k: v for k, v in settings.items() if k not in neutral},
    }


def connection_json(config: Config, adapter: Adapter, prints: dict[str, str]) -> str:
    """:func:`fingerprint` of `adapter`'s connection as canonical JSON, kept in `prints`
    (a load's: its connections do not change) for the other jobs of the connection."""
    found = prints.get(adapter.connection)
    if found is None:
        found = prints[adapter.connection] = canonical_json(fingerprint(config, adapter))
    return found


def config_digest(source_json: str, target_json: str) -> str:
    """A job's config hash: the sha256 of ``{"source": ..., "target": ...}`` as canonical
    JSON, made of its connections' canonical JSON (`source_json`, `target_json`, see
    :func:`connection_json`) without encoding them again: the same text, as sorted keys
    and no whitespace nest the same way."""
    return _text_digest('{"source":' + source_json + ',"target":' + target_json + "}")


def _digest(value: Any) -> str:
    return _text_digest(canonical_json(value))


def _text_digest(text: str) -> str:
    # surrogatepass: a path's undecodable bytes too; any other text hashes as it always did
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _check_target(name: str, job: JobConfig, target: type[Adapter]) -> None:
    missing = {Capability.WRITE, Capability.DELETE} - target.capabilities
    if missing:
        raise ConfigError(
            f"job {name!r}: connection {job.target!r} ({target.name} adapter) cannot "
            + " or ".join(sorted(missing)),
            hint="A mirror job's target must be able to write and delete records; "
            "choose another target connection.",
        )


def full_reasons(
    job: LoadedJob,
    state: JobState,
    reconcile: bool | None,
    now: dt.datetime,
    owed: int = 0,
    waiting: int = 0,
) -> list[str]:
    """Why the next run must read everything; empty when an incremental read will do.

    `owed` is how many changes are outstanding from earlier runs: a full read re-decides
    them, whatever the source says by now; so are the `waiting` changes held for approval.
    """
    if state.policy_hash is None:
        return ["first run"]
    reasons = [f"{owed} change(s) outstanding from an earlier run"] if owed else []
    if waiting:
        reasons.append(f"{waiting} change(s) held for approval")
    if state.policy_hash != job.policy.content_hash:
        reasons.append("the policy changed")
    if state.config_hash != job.config_hash:
        reasons.append("a connection's mapping or settings changed")
    if reconcile:
        reasons.append("reconciliation requested")
    elif reconcile is None and _reconcile_due(job, state, now):
        reasons.append("reconciliation due")
    return reasons


def _reconcile_due(job: LoadedJob, state: JobState, now: dt.datetime) -> bool:
    last = state.last_reconciled_at
    return last is None or now - last >= job.options.reconcile_interval
