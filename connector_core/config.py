"""connector.yaml: the network's consent purposes, connections, jobs and state store.

:func:`load_config` reports every problem in the file at once (structure, each connection's
adapter settings, references between jobs, connections and consent purposes), each as
``path:line:col: message``, sorted by line.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connector_core import scrub
from connector_core.adapters import Adapter, AdapterSettings, Capability, ConfigPath
from connector_core.credentials import (
    NETWORK,
    KeyringSecrets,
    SecretRef,
    env_var_name,
    owner,
    secret_refs,
)
from connector_core.errors import ConfigError, ConfigValidationError, ConnectorError, Problem
from connector_core.local_paths import known_places, path_problems, target_problems
from connector_core.records import FIELDS, consent_purpose, is_known_field
from connector_core.yaml_errors import (
    CONFIG_MAX_BYTES,
    LocatedDocument,
    did_you_mean,
    dotted,
    load_yaml,
    sorted_problems,
    validate,
    without_credentials,
)

if TYPE_CHECKING:
    from connector_core.fanin import FanIn
    from connector_core.templates import PartnerJob

CONFIG_ENV = "CONNECTOR_CONFIG"
DEFAULT_FILE = "connector.yaml"
CONNECTION_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
PURPOSE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
T = TypeVar("T")
HINT = "Fix the lines above; `connector schema config` prints the JSON Schema for your editor."


def _check_schedule(value: str | None) -> str | None:
    if value is None:
        return value
    from croniter import croniter  # imported only for jobs that have a schedule

    if not croniter.is_valid(value):
        raise ValueError(
            f"{value!r} is not a valid cron schedule; write five fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *' for 02:00 daily"
        )
    return value


def _check_policy_file(value: Path) -> Path:
    if not value.is_file():
        what = "is a folder, not a file" if value.is_dir() else "does not exist"
        raise ValueError(
            f"policy file {value} {what} (relative paths start at connector.yaml's folder)"
        )
    return value


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """Make a relative ``sqlite:///file.db`` URL relative to `base_dir`; keep others as is."""
    rest, sep, query = url.removeprefix("sqlite:///").partition("?")
    if not url.startswith("sqlite:///") or not rest or rest.startswith(("/", ":memory:")):
        return url
    return f"sqlite:///{(base_dir / rest).as_posix()}{sep}{query}"


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkConfig(_Block):
    """Who runs this connector."""

    name: str = Field(
        min_length=1,
        pattern=r"^\S(.*\S)?$",
        description="The network's name, shown in reports and the ledger; it also namespaces "
        "the network's keyring entries, so give each network on one OS account its own name",
    )
    floor: Annotated[ConfigPath, AfterValidator(_check_policy_file)] | None = Field(
        default=None,
        description="The network floor policy: every job's policy can only narrow what it "
        "allows, and its forbids bind everyone",
    )
    hash_key: SecretRef | None = Field(
        default=None,
        description="Secret for the hash mask, e.g. {secret: hash_key} (stored with "
        "`connector credentials set network hash_key`); the same key gives the same hashes",
    )
    ledger_key: SecretRef = Field(
        default=SecretRef(secret="ledger_key"),
        description="Secret that keys the ledger's hash chain (HMAC), never stored in the "
        "database; default {secret: ledger_key}, stored with `connector credentials set network "
        "ledger_key` or exported as CONNECTOR_SECRET_NETWORK_LEDGER_KEY. The first run on a "
        "fresh ledger generates one into the keyring when none is set",
    )
    key_secret: SecretRef | None = Field(
        default=None,
        description="Secret that keys target keys, e.g. {secret: key_secret} (stored with "
        "`connector credentials set network key_secret`); never share it. Default: a secret "
        "the state store generates for itself",
    )


class PurposeConfig(_Block):
    """One consent purpose the network asks people about."""

    description: str = Field(description="What a person agrees to under this purpose")


class ConsentConfig(_Block):
    """The network's consent model: its few purposes, declared once."""

    purposes: dict[str, PurposeConfig] = Field(
        default_factory=dict,
        description="Consent purposes by lowercase identifier, e.g. contact_me",
    )


class ConnectionConfig(_Block):
    """One tool holding contacts, reached through an adapter."""

    adapter: str = Field(description="Name of an installed adapter, e.g. csv")
    description: str = Field(default="", description="What this connection is, for people")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="The adapter's settings (see its documentation)"
    )
    mapping: dict[str, str | None] = Field(
        default_factory=dict,
        description="Canonical field -> the tool's field name; null removes a default entry",
    )


class JobConfig(_Block):
    """A sync job: what flows from one connection to another, under which policy."""

    source: str = Field(description="The connection records are read from")
    target: str = Field(description="The connection the permitted projection is written to")
    policy: Annotated[ConfigPath, AfterValidator(_check_policy_file)] = Field(
        description="Policy file, relative to connector.yaml's folder"
    )
    schedule: Annotated[str | None, AfterValidator(_check_schedule)] = Field(
        default=None, description="Cron expression, e.g. '0 * * * *' for hourly"
    )
    mode: Literal["mirror"] = Field(
        default="mirror", description="mirror: the target holds exactly the policy's projection"
    )
    enabled: bool = Field(default=True, description="false keeps the job defined but never runs it")
    options: dict[str, Any] = Field(default_factory=dict, description="Job options")


class PartnerTargetConfig(_Block):
    """The target connection each partner gets: adapter, settings with partner values."""

    adapter: str = Field(description="Name of an installed adapter, e.g. csv")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="The adapter's settings; `{partner.COLUMN}` inside a text is the partner's "
        "value (e.g. out/{partner.name}.csv) and `{partner: COLUMN}` a whole value",
    )
    mapping: dict[str, str | None] = Field(
        default_factory=dict,
        description="Canonical field -> the tool's field name; null removes a default entry",
    )


class PartnerTemplateConfig(_Block):
    """A job template: one job per partner of its registry, named TEMPLATE.PARTNER."""

    registry: ConfigPath = Field(
        description="The partner registry: a .csv or .yaml file with a `name` per partner and "
        "the columns the policy and the target settings use (relative to connector.yaml)"
    )
    source: str = Field(description="The connection every partner's records are read from")
    policy: Annotated[ConfigPath, AfterValidator(_check_policy_file)] = Field(
        description="Policy file; `{partner: COLUMN}` in its conditions is the partner's value"
    )
    target: PartnerTargetConfig = Field(description="Each partner's target connection")
    schedule: Annotated[str | None, AfterValidator(_check_schedule)] = Field(
        default=None, description="Cron expression for every partner's job"
    )
    mode: Literal["mirror"] = Field(default="mirror", description="mirror (the only mode)")
    enabled: bool = Field(default=True, description="false keeps the jobs but never runs them")
    options: dict[str, Any] = Field(default_factory=dict, description="Job options")
    max_retire: int | None = Field(
        default=None,
        ge=0,
        description="Most partners one run may retire (take all their data back) without "
        "`connector run --accept-retire N`; default: 5, or 10% of the partners if more",
    )


# -- fan-in (connector_core.fanin): many partners' sources into one target ----------------


class FanInSourceConfig(_Block):
    """One partner feeding a fan-in: its name, its source connection and its policy."""

    partner: str = Field(description="The partner's name (lowercase letters, digits, '-', '_')")
    source: str = Field(description="The connection the partner's records are read from")
    policy: Annotated[ConfigPath, AfterValidator(_check_policy_file)] = Field(
        description="The partner's policy: which of its people and fields go up"
    )


class FanInPartnersConfig(_Block):
    """A partner registry whose every partner's source feeds a fan-in."""

    registry: ConfigPath = Field(
        description="The partner registry (.csv or .yaml, a `name` per partner), relative "
        "to connector.yaml"
    )
    source: PartnerTargetConfig = Field(
        description="Each partner's source connection: adapter, settings (with "
        "`{partner.COLUMN}` / `{partner: COLUMN}`), mapping"
    )
    policy: Annotated[ConfigPath, AfterValidator(_check_policy_file)] = Field(
        description="The partners' policy; `{partner: COLUMN}` in its conditions is the "
        "partner's value"
    )


class FanInConfig(_Block):
    """A fan-in job: many partners' sources into one target, one record per person."""

    target: str = Field(description="The one connection every partner's people go to")
    policy: Annotated[ConfigPath, AfterValidator(_check_policy_file)] = Field(
        description="The target's policy; it must require the fan-in's purpose"
    )
    purpose: str = Field(
        description="The consent purpose of the fan-in (e.g. national): a person goes up "
        "only with it, and a 'no' stated by any partner takes the person back"
    )
    match: list[Literal["email", "phone"]] = Field(
        default=["email", "phone"],
        min_length=1,
        description="How people are matched across partners (keyed hashes, never values)",
    )
    phone_country: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]{0,2}$",
        description="Country calling code for phone numbers written without one, e.g. '44'",
    )
    suppress: str | None = Field(
        default=None,
        description="A connection listing people who said no to the target's group "
        "(matched by email or phone); they never go up and are taken back",
    )
    sources: list[FanInSourceConfig] = Field(
        default_factory=list, description="The partners feeding the fan-in, one by one"
    )
    partners: FanInPartnersConfig | None = Field(
        default=None, description="A partner registry whose partners feed the fan-in"
    )
    schedule: Annotated[str | None, AfterValidator(_check_schedule)] = Field(
        default=None, description="Cron expression, e.g. '0 * * * *' for hourly"
    )
    enabled: bool = Field(default=True, description="false keeps it defined but never runs it")
    options: dict[str, Any] = Field(default_factory=dict, description="Job options")


class StateConfig(_Block):
    """Where the connector keeps its id map, cursors and ledger."""

    url: str = Field(
        default="sqlite:///state.db",
        validate_default=True,
        description="SQLAlchemy URL; a relative SQLite path is relative to connector.yaml",
    )

    @field_validator("url")
    @classmethod
    def _relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        return value if base is None else resolve_sqlite_url(value, Path(base))


class LedgerConfig(_Block):
    """Where the ledger's anchors are written down, outside the state store."""

    anchors: ConfigPath | None = Field(
        default=None,
        description="Append-only file that gets one `TIME SEQ:HASH` line (the ledger head) after "
        "every `connector run`, relative to connector.yaml's folder; `connector ledger verify` "
        "checks every line of it. Keep it where the state store's users cannot rewrite it",
    )
    anchor_command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="A command run after every `connector run` with the anchor line "
        "(`TIME SEQ:HASH`) on its standard input and in CONNECTOR_LEDGER_ANCHOR, to send it "
        "elsewhere: syslog, a mail, a notary, another machine. A list: the program and its "
        "arguments, run without a shell, e.g. [logger, -t, connector-anchor]",
    )


_OPENSSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+=*( .*)?$"
)


class ApproverConfig(_Block):
    """A person who may approve or deny change sets, with the public key that signs."""

    organization: str = Field(description="The organization this person speaks for")
    email: str = Field(default="", description="Where notifications about change sets go")
    key: str = Field(
        description="The person's OpenSSH public key line, e.g. `ssh-ed25519 AAAA... name`; "
        "they sign with the private half (`ssh-keygen -Y sign`)"
    )
    groups: list[str] = Field(
        default_factory=list, description="Groups this person belongs to (policies may name them)"
    )

    @field_validator("key")
    @classmethod
    def _openssh_key(cls, value: str) -> str:
        value = value.strip()
        if not _OPENSSH_KEY_RE.match(value):
            raise ValueError(
                "not an OpenSSH public key line; paste the one line of the person's .pub file, "
                "e.g. `ssh-ed25519 AAAAC3Nza... alice@example.org`"
            )
        return value

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not CONNECTION_NAME_RE.match(name):
                raise ValueError(
                    f"{name!r} is not a group name; use lowercase letters, digits, '-' and '_'"
                )
        return value


NoticeKind = Literal["waiting", "escalated", "decided", "expired"]
#: What a notice can be about: a set waits for approvers, escalates to the fallback
#: approvers, is decided, or expires undecided.
NOTICE_KINDS: tuple[NoticeKind, ...] = ("waiting", "escalated", "decided", "expired")
_EMAIL_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


def _check_email(value: str | None) -> str | None:
    if value is not None and not _EMAIL_RE.match(value):
        raise ValueError("must be one email address, e.g. connector@example.org")
    return value


Email = Annotated[str, AfterValidator(_check_email)]


class EmailConfig(_Block):
    """How notifications are sent by email: an SMTP server the network already uses."""

    host: str = Field(min_length=1, description="SMTP server, e.g. smtp.example.org")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Default: 587 with starttls, 465 with ssl, 25 with none",
    )
    security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls",
        description="starttls (port 587), ssl (implicit TLS, port 465), or none (a relay on "
        "this machine only: no password is ever sent without TLS)",
    )
    sender: Email = Field(description="The From address, e.g. connector@example.org")
    username: str | None = Field(default=None, description="SMTP login, if the server wants one")
    password: SecretRef | None = Field(
        default=None,
        description="The SMTP password, e.g. {secret: smtp_password} (stored with `connector "
        "credentials set network smtp_password`); never written here",
    )
    ca_bundle: ConfigPath | None = Field(
        default=None, description="CA certificates (PEM) to trust for a private CA"
    )
    timeout: float = Field(
        default=10, gt=0, le=120, description="Seconds to wait for the server at each step"
    )

    @model_validator(mode="after")
    def _password_needs_tls(self) -> EmailConfig:
        if self.password is not None and self.security == "none":
            raise ValueError("a password is only sent over TLS: use security: starttls or ssl")
        if (self.password is None) != (self.username is None):
            raise ValueError("give both username and password, or neither")
        return self


class WebhookConfig(_Block):
    """A URL that receives each notification as a JSON POST (chat bridges, automations)."""

    url: str | SecretRef = Field(
        description="http(s) URL; one that holds a token (Mattermost, Matrix hookshot) is a "
        "secret: write {secret: KEY} and store it with `connector credentials set network KEY`"
    )
    secret: SecretRef | None = Field(
        default=None,
        description="Key for an HMAC-SHA256 of the body, sent as X-Connector-Signature: "
        "sha256=HEX so the receiver can check where it came from",
    )
    kinds: list[NoticeKind] = Field(
        default_factory=lambda: list(NOTICE_KINDS),
        description="Which notices to send here (default: all)",
    )
    timeout: float = Field(default=10, gt=0, le=60, description="Seconds per attempt")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | SecretRef) -> str | SecretRef:
        if isinstance(value, str):
            parts = _url_parts(value)
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
            if parts.username is not None or parts.password is not None:
                raise ValueError("must not hold a user name or password: use {secret: KEY}")
        return value


class NotificationsConfig(_Block):
    """Who is told when approvals wait, escalate, are decided or expire, and how."""

    admin: Email | None = Field(
        default=None, description="The admin's email: told when a set is decided or expires"
    )
    email: EmailConfig | None = Field(default=None, description="Send notices by email (SMTP)")
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="Send notices as JSON POSTs to these URLs"
    )

    def secret_refs(self) -> list[tuple[str, SecretRef]]:
        """Every secret this section refers to, with its dotted setting name (the network's
        secrets: `connector credentials set network KEY`)."""
        found = []
        if self.email is not None and self.email.password is not None:
            found.append(("notifications.email.password", self.email.password))
        for i, hook in enumerate(self.webhooks):
            if isinstance(hook.url, SecretRef):
                found.append((f"notifications.webhooks.{i}.url", hook.url))
            if hook.secret is not None:
                found.append((f"notifications.webhooks.{i}.secret", hook.secret))
        return found


class RequestsConfig(_Block):
    """How this network answers share requests (docs/approvals.md, "Share requests")."""

    source: str = Field(
        description="The connection an approved request's job reads from (e.g. members)"
    )
    folder: str = Field(
        default="requests",
        description="Folder (relative to connector.yaml) where each approved request's policy "
        "and job are written, and read back as jobs named request-<id>",
    )
    approval: dict[str, Any] = Field(
        description="Who decides requests: an approval block as in a policy (approvers, "
        "quorum, fallback_approvers, escalate_after, expire_after)"
    )


_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps")


class QueueConfig(_Block):
    """Worker mode: jobs run as Celery tasks taken from a Redis or RabbitMQ broker."""

    broker: str = Field(
        description="Broker URL without user or password: redis://HOST:6379/DB or "
        "amqp://HOST:5672/VHOST (rediss:// and amqps:// for TLS)"
    )
    username: str | SecretRef | None = Field(
        default=None,
        description="Broker user: a name, or {secret: KEY} / {env: VARIABLE} (stored with "
        "`connector credentials set network KEY`)",
    )
    password: SecretRef | None = Field(
        default=None,
        description="Broker password, e.g. {secret: broker_password} (stored with `connector "
        "credentials set network broker_password`) or {env: VARIABLE}; never written here",
    )
    queue: str = Field(
        default="connector",
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="The queue's name; networks sharing one broker give each its own",
    )
    retry_backoff: float = Field(
        default=30,
        gt=0,
        le=86400,
        description="Seconds before the first retry of a job that met a passing failure (a "
        "remote down, its lock held); each further retry waits twice as long",
    )
    backoff_max: float = Field(
        default=900, gt=0, le=86400, description="The longest wait between two retries, seconds"
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Retries of a passing failure before the job is left to its next run",
    )
    visibility_timeout: float = Field(
        default=3600,
        gt=0,
        le=7 * 86400,
        description="Redis: seconds after which a task a worker took and never acknowledged "
        "(the worker died) goes to another worker; longer than your longest job",
    )
    group_limit: int = Field(
        default=32,
        ge=1,
        le=100_000,
        description="Most jobs sharing a source that one task runs from one read (in "
        "groups of up to 256 jobs holding their locks at a time); more jobs on a source are "
        "spread over more tasks (and workers)",
    )

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = _url_parts(value)
        if parts is None or parts.scheme not in _BROKER_SCHEMES or not parts.hostname:
            raise ValueError(
                "must be a redis://HOST:PORT/DB or amqp://HOST:PORT/VHOST URL "
                "(rediss:// and amqps:// with TLS)"
            )
        if parts.username is not None or parts.password is not None or parts.query:
            raise ValueError(
                "must not hold a user name, password or query: write the user in `username` "
                "and the password as `password: {secret: KEY}`"
            )
        return value


class ConnectorConfig(_Block):
    """The whole of connector.yaml."""

    model_config = ConfigDict(extra="forbid", title="connector.yaml")

    version: Literal[1] = Field(description="Format version of this file; currently 1")
    network: NetworkConfig
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    connections: dict[str, ConnectionConfig] = Field(
        description="Connections by name (lowercase letters, digits, '_' and '-')"
    )
    jobs: dict[str, JobConfig] = Field(default_factory=dict, description="Sync jobs by name")
    partners: dict[str, PartnerTemplateConfig] = Field(
        default_factory=dict,
        description="Job templates by name: one job per partner of a registry",
    )
    fan_in: dict[str, FanInConfig] = Field(
        default_factory=dict,
        description="Fan-in jobs by name: many partners' sources into one target",
    )
    state: StateConfig = Field(default_factory=StateConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    approvers: dict[str, ApproverConfig] = Field(
        default_factory=dict,
        description="People who may approve change sets, by name (a policy's approval block "
        "names them or their groups)",
    )
    notifications: NotificationsConfig | None = Field(
        default=None, description="Email and webhook notices about approvals"
    )
    requests: RequestsConfig | None = Field(
        default=None, description="How share requests from other groups are answered"
    )
    queue: QueueConfig | None = Field(
        default=None,
        description="Worker mode: the broker `connector worker` takes jobs from and "
        "`connector run --queue` puts them on",
    )

    @model_validator(mode="after")
    def _default_state_in_context(self, info: ValidationInfo) -> ConnectorConfig:
        # A default is not validated, so the default URL would miss the config's folder.
        if "state" not in self.model_fields_set:
            self.state = StateConfig.model_validate({}, context=info.context)
        return self


@dataclasses.dataclass
class Config:
    """A loaded, fully validated connector.yaml, ready to open its connections."""

    path: Path
    base_dir: Path
    model: ConnectorConfig
    settings: dict[str, AdapterSettings]
    adapters: dict[str, type[Adapter]]
    document: LocatedDocument
    #: the jobs expanded from job templates (also in model.jobs), by job name
    partner_jobs: dict[str, PartnerJob] = dataclasses.field(default_factory=dict)
    #: every installed adapter by adapter name (a retired partner's target may need one)
    installed: Mapping[str, type[Adapter]] = dataclasses.field(default_factory=dict)
    #: the fan-in jobs with their partners' sources (see connector_core.fanin), by name
    fan_ins: dict[str, FanIn] = dataclasses.field(default_factory=dict)
    #: jobs that may not run in this process, with why (a partner whose target moved and
    #: whose old target could not be emptied yet): loading one raises the error
    blocked: dict[str, ConnectorError] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def extra_fields(self) -> list[str]:
        """The ``extra.*`` fields the connections map or their adapters add (computed once:
        with a partner registry there is a target connection per partner)."""
        extras = [f for c in self.model.connections.values() for f in c.mapping]
        extras += [f for settings in self.settings.values() for f in settings.extra_fields()]
        return list(dict.fromkeys(f for f in extras if f.startswith("extra.")))

    def connection(self, name: str) -> ConnectionConfig:
        """The connection called `name`; a ConfigError with a suggestion if there is none."""
        return _lookup(self.model.connections, name, "connection", self.path)

    def approver_names(self, name: str) -> list[str]:
        """The people `name` stands for: the person, or the members of the group; [] if none."""
        people = self.model.approvers
        if name in people:
            return [name]
        return [person for person, body in people.items() if name in body.groups]

    def job(self, name: str) -> JobConfig:
        """The job called `name`; a ConfigError with a suggestion if there is none."""
        return _lookup(self.model.jobs, name, "job", self.path)

    def secrets(self, connection: str = NETWORK, *, legacy: bool = True) -> KeyringSecrets:
        """The secrets of `connection` (default: the network's own), in this network's
        keyring namespace; `legacy` also reads entries of before namespacing."""
        return KeyringSecrets(self.model.network.name, connection, legacy=legacy)

    def open_adapter(self, connection: str) -> Adapter:
        """Construct the adapter of `connection` with its settings, secrets and mapping."""
        mapping = self.connection(connection).mapping
        adapter_cls = self.adapters[connection]
        partner = self.partner_jobs.get(connection)
        return adapter_cls(
            self.settings[connection],
            # a partner's target reads its template's secrets: one set for all partners
            self.secrets(connection if partner is None else partner.template),
            mapping=mapping,
            connection=connection,
        )


def _lookup(items: Mapping[str, T], name: str, what: str, path: Path) -> T:
    if name in items:
        return items[name]
    known = ", ".join(items) or "none"
    raise ConfigError(
        f"no {what} named {name!r} in {path}{did_you_mean(name, items)}",
        hint=f"Defined {what}s: {known}.",
    )


def find_config(explicit: Path | None = None) -> Path:
    """The config file: `explicit`, else $CONNECTOR_CONFIG, else ./connector.yaml."""
    if explicit is not None:
        candidate, hint = explicit, "Check the path given with --config."
    elif os.environ.get(CONFIG_ENV):
        candidate = Path(os.environ[CONFIG_ENV])
        hint = f"{CONFIG_ENV} names a missing file: fix it or unset it."
    else:
        candidate = Path.cwd() / DEFAULT_FILE
        hint = f"Run in the folder holding {DEFAULT_FILE}, pass --config PATH or set {CONFIG_ENV}."
    if candidate.is_dir():
        candidate = candidate / DEFAULT_FILE
    if not candidate.is_file():
        raise ConfigError(f"configuration file not found: {candidate}", hint=hint)
    return candidate


def load_config(path: Path, adapters: Mapping[str, type[Adapter]]) -> Config:
    """Load and check connector.yaml, raising one ConfigValidationError with every problem."""
    doc = load_yaml(path, max_bytes=CONFIG_MAX_BYTES)
    base_dir = path.resolve().parent
    problems: list[Problem] = []
    model: ConnectorConfig | None = None
    try:
        model = validate(doc, ConnectorConfig, context={"base_dir": base_dir})
    except ConfigValidationError as err:
        problems += err.problems
    problems += _check_names(doc)
    problems += _check_approver_keys(doc, model)
    problems += _check_url_credentials(doc)
    problems += _check_adapters(doc, adapters)
    problems += _check_mappings(doc)
    problems += _check_jobs(doc)
    settings = _validate_settings(doc, adapters, base_dir, problems)
    problems += _check_shared_targets(doc, adapters, settings)
    problems += path_problems(doc, settings, model)
    problems += _check_secret_variables(doc, model, settings)
    partner_jobs: dict[str, PartnerJob] = {}
    if model is not None and model.partners and not problems:
        from connector_core.templates import expand_templates  # only with job templates

        partner_jobs = expand_templates(doc, model, adapters, settings, base_dir, problems)
    fan_ins: dict[str, FanIn] = {}
    if model is not None and model.fan_in and not problems:
        from connector_core.fanin import expand_fan_ins  # only with fan-in jobs

        fan_ins = expand_fan_ins(doc, model, adapters, settings, base_dir, problems)
    if problems or model is None:
        raise ConfigValidationError(sorted_problems(problems), hint=_hint(problems, model))
    if model.requests is not None:
        places = known_places(doc, settings, model)
        model = _with_request_jobs(
            model, base_dir / model.requests.folder, adapters, settings, places
        )
    return Config(
        path=path,
        base_dir=base_dir,
        model=model,
        settings=settings,
        adapters={name: adapters[c.adapter] for name, c in model.connections.items()},
        document=doc,
        partner_jobs=partner_jobs,
        installed=adapters,
        fan_ins=fan_ins,
    )


def _mapping(doc: LocatedDocument, *loc: str) -> dict[str, Any]:
    """The mapping at `loc`, or {} when it is absent or not a mapping (pydantic reports that)."""
    value = doc.get(loc)
    return value if isinstance(value, dict) else {}


def _connections(doc: LocatedDocument) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in _mapping(doc, "connections").items() if isinstance(v, dict)}


def _check_names(doc: LocatedDocument) -> list[Problem]:
    problems = [
        doc.problem(
            ("connections", name),
            f"connection name {name!r} must start with a lowercase letter and use only "
            "a-z, 0-9, '_' and '-'",
            key=True,
        )
        for name in _mapping(doc, "connections")
        if not CONNECTION_NAME_RE.match(name)
    ]
    if NETWORK in _mapping(doc, "connections"):
        problems.append(
            doc.problem(
                ("connections", NETWORK),
                f"a connection cannot be called {NETWORK!r}: the network's own secrets are "
                "kept under that name; rename the connection",
                key=True,
            )
        )
    problems += [
        doc.problem(
            ("consent", "purposes", name),
            f"consent purpose {name!r} must start with a lowercase letter and use only "
            "a-z, 0-9 and '_'",
            key=True,
        )
        for name in _mapping(doc, "consent", "purposes")
        if not PURPOSE_RE.match(name)
    ]
    return problems


def _hint(problems: list[Problem], model: ConnectorConfig | None) -> str:
    """The registry's hint when every problem is in a partner registry, else the config's."""
    registries = {str(t.registry) for t in model.partners.values()} if model else set()
    if registries and all(p.path in registries for p in problems):
        from connector_core.partners import REGISTRY_HINT

        return REGISTRY_HINT
    return HINT


def _check_approver_keys(doc: LocatedDocument, model: ConnectorConfig | None) -> list[Problem]:
    """Each approver signs with a key of their own: quorum counts people, and one key under
    two names would let one person count twice (keys compared without their comment)."""
    if model is None:
        return []
    seen: dict[tuple[str, ...], str] = {}
    problems = []
    for name, person in model.approvers.items():
        first = seen.setdefault(tuple(person.key.split()[:2]), name)
        if first != name:
            message = (
                f"approvers.{name}.key: the same key as approvers.{first}; each person signs "
                "with a key of their own (a quorum counts people: one key would count twice)"
            )
            problems.append(doc.problem(("approvers", name, "key"), message))
    return problems


def _check_url_credentials(doc: LocatedDocument) -> list[Problem]:
    """Refuse a URL holding a user name or password in any connection setting, whatever the
    adapter types it as: it would show in messages, logs and the state database."""
    problems = []
    for name, connection in _connections(doc).items():
        for loc, value in _strings(connection.get("settings"), ("connections", name, "settings")):
            parts = _url_parts(value)
            if parts is None:
                continue
            query = "?" + parts.query
            if without_credentials(query) != query:  # ?password=..., ?token=...
                for _, secret in parse_qsl("&" + parts.query):
                    scrub.remember(secret)
                plain = urlunsplit(parts._replace(query="", fragment=""))
                problems.append(
                    doc.problem(
                        loc,
                        f"{dotted(loc)}: a URL must not hold a password or token in its query "
                        f"(it would show in messages, logs and the state database); write "
                        f"{without_credentials(plain)!r} here and the credential as "
                        f"`{{secret: KEY}}`, stored with `connector credentials set {name} KEY`",
                    )
                )
                continue
            if parts.username is None and parts.password is None:
                continue
            scrub.remember(parts.netloc.rpartition("@")[0])  # never shown, even by accident
            plain = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
            problems.append(
                doc.problem(
                    loc,
                    f"{dotted(loc)}: a URL must not hold a user name or password (they would "
                    f"show in messages, logs and the state database); write {plain!r} here, the "
                    "user in the connection's user setting and the password as "
                    f"`{{secret: KEY}}`, stored with `connector credentials set {name} KEY`",
                )
            )
    return problems


def _check_secret_variables(
    doc: LocatedDocument, model: ConnectorConfig | None, settings: Mapping[str, AdapterSettings]
) -> list[Problem]:
    """Refuse two ``{secret: KEY}`` of different connections or keys whose fallback variable
    (:func:`env_var_name`) is the same: one value would silently stand in for both."""
    refs: list[tuple[str, str, tuple[str | int, ...]]] = []
    if model is not None:
        refs += [
            (NETWORK, ref.secret, ("network", *name.split(".")))
            for name, ref in secret_refs(model.network)
            if ref.secret is not None
        ]
        if model.notifications is not None:
            refs += [
                (NETWORK, ref.secret, tuple(int(p) if p.isdigit() else p for p in name.split(".")))
                for name, ref in model.notifications.secret_refs()
                if ref.secret is not None
            ]
        if model.queue is not None:
            refs += [
                (NETWORK, ref.secret, ("queue", name))
                for name in ("username", "password")
                if isinstance(ref := getattr(model.queue, name), SecretRef)
                and ref.secret is not None
            ]
    for connection, values in settings.items():
        refs += [
            (connection, ref.secret, ("connections", connection, "settings", *name.split(".")))
            for name, ref in secret_refs(values)
            if ref.secret is not None
        ]
    seen: dict[str, tuple[str, str, tuple[str | int, ...]]] = {}
    problems = []
    for connection, key, loc in refs:
        variable = env_var_name(connection, key)
        first = seen.setdefault(variable, (connection, key, loc))
        if first[:2] == (connection, key):
            continue
        line = (doc.locate(first[2]) or (None, None))[0]
        problems.append(
            doc.problem(
                loc,
                f"{dotted(loc)}: the secret {key!r} of {owner(connection)} and the secret "
                f"{first[1]!r} of {owner(first[0])} ({doc.path}:{line}) would both be read "
                f"from the variable {variable} when the keyring has none; rename one key "
                "(or the connection) and store it again with `connector credentials set`",
            )
        )
    return problems


def _strings(value: Any, loc: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """Every string below `value` (mappings and lists), with its location."""
    if isinstance(value, str):
        return [(loc, value)]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _strings(v, (*loc, k))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _strings(v, (*loc, i))]
    return []


def _url_parts(value: str) -> SplitResult | None:
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return parts if parts.scheme and parts.netloc else None


def _check_adapters(doc: LocatedDocument, adapters: Mapping[str, type[Adapter]]) -> list[Problem]:
    problems = []
    for name, connection in _connections(doc).items():
        adapter = connection.get("adapter")
        if isinstance(adapter, str) and adapter not in adapters:
            loc = ("connections", name, "adapter")
            installed = ", ".join(adapters) or "none"
            suggestion = did_you_mean(adapter, adapters) or f"; installed adapters: {installed}"
            problems.append(
                doc.problem(loc, f"{dotted(loc)}: unknown adapter {adapter!r}{suggestion}")
            )
    return problems


def _validate_settings(
    doc: LocatedDocument,
    adapters: Mapping[str, type[Adapter]],
    base_dir: Path,
    problems: list[Problem],
) -> dict[str, AdapterSettings]:
    settings: dict[str, AdapterSettings] = {}
    for name, connection in _connections(doc).items():
        adapter = connection.get("adapter")
        loc = ("connections", name, "settings")
        if not isinstance(adapter, str) or adapter not in adapters:
            continue
        if not isinstance(doc.get(loc, {}), dict):
            continue  # the structure check already reports it
        model = adapters[adapter].settings_model
        try:
            settings[name] = validate(doc, model, context={"base_dir": base_dir}, prefix=loc)
        except ConfigValidationError as err:
            problems.extend(err.problems)
    return settings


def _check_mappings(doc: LocatedDocument) -> list[Problem]:
    purposes = list(_mapping(doc, "consent", "purposes"))
    problems = []
    for name in _connections(doc):
        for field in _mapping(doc, "connections", name, "mapping"):
            message = _mapping_key_problem(field, purposes)
            if message:
                loc = ("connections", name, "mapping", field)
                problems.append(doc.problem(loc, f"{dotted(loc[:-1])}: {message}", key=True))
    return problems


def _mapping_key_problem(field: str, purposes: list[str]) -> str | None:
    if not is_known_field(field):
        choices = [*FIELDS, *(f"consent.{p}" for p in purposes)]
        suggestion = did_you_mean(field, choices) or (
            "; use a canonical field name, consent.<purpose> or extra.<adapter>.<name>"
        )
        return f"unknown canonical field {field!r}{suggestion}"
    purpose = consent_purpose(field)
    if purpose is not None and purpose not in purposes:
        suggestion = did_you_mean(purpose, purposes) or (
            f"; declared purposes: {', '.join(purposes) or 'none'}"
        )
        return f"consent purpose {purpose!r} is not declared in consent.purposes{suggestion}"
    return None


def _check_jobs(doc: LocatedDocument) -> list[Problem]:
    connections = list(_mapping(doc, "connections"))
    problems = []
    for job, body in _mapping(doc, "jobs").items():
        if not isinstance(body, dict):
            continue
        for role in ("source", "target"):
            value = body.get(role)
            if isinstance(value, str) and value not in connections:
                loc = ("jobs", job, role)
                suggestion = did_you_mean(value, connections) or (
                    f"; defined connections: {', '.join(connections) or 'none'}"
                )
                message = f"{dotted(loc)}: unknown connection {value!r}{suggestion}"
                problems.append(doc.problem(loc, message))
        if isinstance(body.get("source"), str) and body.get("source") == body.get("target"):
            message = f"jobs.{job}: source and target are both {body['source']!r}; a job "
            message += "copies from one connection to another"
            problems.append(doc.problem(("jobs", job, "target"), message))
    return problems


def _check_shared_targets(
    doc: LocatedDocument,
    adapters: Mapping[str, type[Adapter]],
    settings: Mapping[str, AdapterSettings],
) -> list[Problem]:
    """One writer per target: a second job writing a target is refused, unless the target's
    adapter keeps each job's records apart (Capability.PER_JOB_RECORDS).

    A target is where a connection writes (:meth:`AdapterSettings.target_identity`: a remote
    file or book, a local file), so two connections naming one place are one target.
    """
    connections = _connections(doc)
    first: dict[str, tuple[str, str]] = {}  # place -> (the first job writing it, its target)
    problems = []
    for job, body in _mapping(doc, "jobs").items():
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, str) or target not in connections:
            continue  # _check_jobs reports an unknown connection
        adapter = adapters.get(str(connections[target].get("adapter")))
        if adapter is None or Capability.PER_JOB_RECORDS in adapter.capabilities:
            continue
        values = settings.get(target)
        places = {f"connection:{target}", *(values.target_identity() if values else ())}
        earlier = next((first[place] for place in sorted(places) if place in first), None)
        if earlier is None:
            first.update(dict.fromkeys(places, (job, target)))
        elif earlier[1] == target:
            problems.append(_shared_target_problem(doc, earlier[0], job, target, adapter.name))
        else:
            problems.append(_same_place_problem(doc, earlier, job, target))
    return problems


def _same_place_problem(
    doc: LocatedDocument, earlier: tuple[str, str], job: str, target: str
) -> Problem:
    job_line = (doc.locate(("jobs", earlier[0], "target")) or (None, None))[0]
    other_line = (doc.locate(("connections", earlier[1])) or (None, None))[0]
    line = (doc.locate(("connections", target)) or (None, None))[0]
    message = (
        f"jobs.{job}.target: connection {target!r} (line {line}) writes the same place as "
        f"connection {earlier[1]!r} (line {other_line}), the target of job {earlier[0]!r} "
        f"(line {job_line}): two jobs writing one file or book lose rows and mix one "
        "recipient's people and columns into another's; give each job its own file "
        "(another file_name, folder or path), or make it one job with one policy"
    )
    return doc.problem(("jobs", job, "target"), message)


def _shared_target_problem(
    doc: LocatedDocument, earlier: str, job: str, target: str, adapter: str
) -> Problem:
    line = (doc.locate(("jobs", earlier, "target")) or (None, None))[0]
    message = (
        f"jobs.{job}.target: jobs {earlier!r} (line {line}) and {job!r} both write connection "
        f"{target!r}, whose {adapter} adapter cannot tell one job's records from another's "
        "(two jobs writing one file lose rows and mix audiences); give each job its own "
        "target connection, or make it one job with one policy"
    )
    return doc.problem(("jobs", job, "target"), message)


def config_json_schema(adapters: Mapping[str, type[Adapter]]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of connector.yaml, with each adapter's settings."""
    schema = ConnectorConfig.model_json_schema()
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    defs["ConnectionConfig"]["properties"]["mapping"] = _mapping_schema()
    connections = schema["properties"]["connections"]
    connections["propertyNames"] = {"pattern": CONNECTION_NAME_RE.pattern}
    defs["ConsentConfig"]["properties"]["purposes"]["propertyNames"] = {
        "pattern": PURPOSE_RE.pattern
    }
    branches = [_connection_schema(name, cls, defs) for name, cls in sorted(adapters.items())]
    if branches:
        connections["additionalProperties"] = {"oneOf": branches}
    return {
        "$schema": JSON_SCHEMA_DRAFT,
        **schema,
        "title": "connector.yaml",
        "description": "Commons Connector: consent purposes, connections, sync jobs and state.",
    }


def _mapping_schema() -> dict[str, Any]:
    text_or_null = {"type": ["string", "null"]}
    return {
        "type": "object",
        "description": "Canonical field -> the tool's field name; null removes a default entry. "
        "Also consent.<purpose> and extra.<adapter>.<name>.",
        "properties": {
            name: {**text_or_null, "description": field.description}
            for name, field in FIELDS.items()
        },
        "additionalProperties": text_or_null,
    }


def _connection_schema(name: str, cls: type[Adapter], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of a connection using adapter `name`: its settings model embedded."""
    settings: dict[str, Any] = cls.settings_model.model_json_schema(
        ref_template=f"#/$defs/{name}.{{model}}"
    )
    for def_name, sub in settings.pop("$defs", {}).items():
        defs[f"{name}.{def_name}"] = sub
    branch: dict[str, Any] = copy.deepcopy(defs["ConnectionConfig"])
    summary = cls.description or (cls.__doc__ or "").strip().split("\n")[0]
    branch["title"] = f"{name} connection"
    branch["properties"]["adapter"] = {"const": name, "description": summary or name}
    branch["properties"]["settings"] = settings
    if settings.get("required"):
        branch["required"] = [*branch.get("required", []), "settings"]
    return branch


#: The name of an approved share request's job and of its delivery connection.
REQUEST_PREFIX = "request-"


class RequestJobFile(_Block):
    """An approved share request's job, as `connector requests decide` writes it."""

    request: str = Field(description="The share request's id")
    expires: str = Field(description="When the share ends (ISO time, UTC)")
    connection: ConnectionConfig = Field(description="The requester's delivery connection")
    job: JobConfig


def _with_request_jobs(
    model: ConnectorConfig,
    folder: Path,
    adapters: Mapping[str, type[Adapter]],
    settings: dict[str, AdapterSettings],
    places: list[Any],
) -> ConnectorConfig:
    """`model` with the job and connection of each approved request in `folder` added
    (files ``<id>.job.yaml``); a generated file that does not load, or whose delivery would
    write one of `places` (a source, another target, the connector's own files: see
    :func:`~connector_core.local_paths.target_problems`), is an error naming it."""
    if not folder.is_dir():
        return model
    connections, jobs = dict(model.connections), dict(model.jobs)
    problems: list[Problem] = []
    for path in sorted(folder.glob("*.job.yaml")):
        doc = load_yaml(path)
        try:
            body = validate(doc, RequestJobFile, context={"base_dir": folder})
            name = REQUEST_PREFIX + body.request
            cls = adapters.get(body.connection.adapter)
            if cls is None:
                raise ConfigValidationError(
                    [doc.problem(("connection", "adapter"), "connection.adapter: not installed")]
                )
            settings[name] = validate(
                doc,
                cls.settings_model,
                context={"base_dir": folder},
                prefix=("connection", "settings"),
            )
            refused = target_problems(settings[name], places)
            if refused:
                raise ConfigValidationError(
                    [
                        doc.problem(("connection", "settings", k), f"connection.settings.{k}: {m}")
                        for k, m in refused
                    ]
                )
        except ConfigValidationError as err:
            problems += err.problems
            continue
        connections[name] = body.connection
        jobs[name] = body.job
    if problems:
        raise ConfigValidationError(
            sorted_problems(problems),
            hint="These files are written by `connector requests decide`; write them again "
            "with `connector requests decide ID approve` or remove the request's files.",
        )
    return model.model_copy(update={"connections": connections, "jobs": jobs})
