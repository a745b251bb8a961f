"""The adapter contract: one external tool, described by class attributes and a few methods.

Adapters never see policies or consent rules: the engine applies them between :meth:`read`
and :meth:`write`, so no adapter can bypass a rule by accident.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import os
from collections.abc import Callable, Collection, Container, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import quote, unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from connector_core.credentials import NoSecrets, SecretLookup
from connector_core.errors import ConnectorError, WriteNotSupported
from connector_core.query import Condition
from connector_core.records import FIELDS, Expected, FieldMapping, Record


class Capability(enum.StrEnum):
    """What an adapter can do; the engine and the conformance kit rely on these."""

    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    INCREMENTAL = "incremental"
    PUSHDOWN = "pushdown"
    SYNC_TOKEN = "sync_token"
    #: The target keeps each record as its own item under the job's key (a card per key, a
    #: row per API object), so several jobs may write one connection without touching each
    #: other's records. Without it, connector.yaml may name the connection as the target of
    #: one job only (a file rewritten whole by two jobs would lose rows and mix audiences).
    PER_JOB_RECORDS = "per_job_records"
    #: write() compares each upsert with what the target holds now and writes only when they
    #: differ (an unchanged upsert costs a read, no write). A full, reconciling run then sends
    #: every shared record, not only those whose projection changed, so that an edit someone
    #: made at the target (a full phone number where a masked one was shared) is put right.
    VERIFIES_CONTENT = "verifies_content"
    #: read() takes ``known=`` (:class:`KnownRows`): the rows the engine decided at the
    #: cursor it passes, as fingerprints. A row whose fingerprint is known is not decoded:
    #: the page lists its id in ``skipped``. Every read given ``known`` reports the
    #: fingerprints of the rows it lists (:attr:`Page.fingerprints`).
    ROW_FINGERPRINTS = "row_fingerprints"


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    if "\x00" in str(value):  # YAML's "\0", a corrupted registry cell: no file system takes it
        raise ValueError("a path cannot hold a NUL character")
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return value if value.is_absolute() or base is None else Path(base) / value


#: A filesystem path in a settings model; relative paths are taken from connector.yaml's folder
#: (the config loader passes ``context={"base_dir": ...}`` when validating settings).
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


class AdapterSettings(BaseModel):
    """Base for every adapter's settings model: unknown keys are errors.

    ``neutral_settings`` names the settings that change how the adapter works (timeouts,
    TLS, paging, concurrency), never which records it reads or how it writes them: changing
    one does not make the next run re-evaluate or rewrite anything.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    neutral_settings: ClassVar[frozenset[str]] = frozenset({"page_size"})
    #: The settings naming local files or folders this connection writes as a job's target.
    #: connector.yaml is refused when one is, or passes through, a symbolic link, or is (or
    #: holds, or lies inside) a path another connection touches or one of the connector's own
    #: files; write them with :mod:`connector_core.files`, which follows no link.
    written_paths: ClassVar[frozenset[str]] = frozenset()

    page_size: int = Field(
        default=500, ge=1, le=100_000, description="Records per page read or written"
    )

    def local_paths(self) -> dict[str, Path]:
        """The local files and folders this connection touches, by setting name.

        The default lists every setting holding a :class:`~pathlib.Path`; override it when
        paths hide elsewhere (a list of files). A target's written paths may not overlap them.
        """
        return {
            name: value
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), Path)
        }

    def target_identity(self) -> frozenset[str]:
        """The places this connection writes as a job's target, each as one string however
        connector.yaml spells it.

        Two connections sharing a place are ONE target for the one-writer rule: connector.yaml
        is refused when two jobs write them, unless the adapter keeps each job's records apart
        (``Capability.PER_JOB_RECORDS``). The default is each written path, resolved
        (``file:/real/path``); a remote adapter returns where it writes, e.g.
        ``"webdav:" + remote_place(file_url)``. Empty: only the connection's name tells.
        """
        return self.written_places(os.path.realpath)

    def written_places(self, real: Callable[[Path], str]) -> frozenset[str]:
        """The default :meth:`target_identity`: each written path resolved by `real`
        (:func:`os.path.realpath`, or a :class:`~connector_core.files.RealPaths` shared by
        the partners of one load)."""
        paths = self.local_paths()
        written = (paths[key] for key in sorted(type(self).written_paths) if key in paths)
        return frozenset(f"file:{real(path)}" for path in written)

    def extra_fields(self) -> frozenset[str]:
        """The ``extra.<adapter>.<name>`` fields these settings map outside the connection's
        ``mapping:`` block (e.g. CiviCRM's ``custom_fields:``), so policies may use them."""
        return frozenset()


_DEFAULT_PORTS = {"http": 80, "https": 443}


def remote_place(url: str) -> str:
    """`url` as one string however it is written, for :meth:`AdapterSettings.target_identity`.

    The scheme and host are lower-cased, a default port, a login and a fragment dropped,
    empty and ``.`` path segments dropped and ``..`` applied, each segment percent-encoded
    one way, and a trailing slash dropped: ``HTTPS://Cloud.org:443//a/./b%20c/`` and
    ``https://cloud.org/a/b c`` are one place.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    segments: list[str] = []
    for segment in parts.path.split("/"):
        if segment in {"", "."}:
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(quote(unquote(segment), safe=""))
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{host}/{'/'.join(segments)}{query}"


@dataclasses.dataclass(frozen=True, slots=True)
class MissingField:
    """A canonical field a connection maps to something its live source does not have.

    ``setting`` is where the connection configures it, as keys below the connection's block
    in connector.yaml (``("mapping", "phone")``, ``("settings", "key_column")``); the engine
    turns it into ``file:line`` when the admin wrote it, and treats it as a default otherwise.
    ``note`` adds what else may hide it (a permission), for the admin.
    """

    canonical: str
    native: str
    setting: tuple[str, ...]
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class SourceFields:
    """What a connection's live source holds, from :meth:`Adapter.available_fields`.

    ``provided``: the canonical names a read can fill now (``id``, fields,
    ``consent.<purpose>`` for each purpose the source carries evidence of, ``extra.*``;
    plain ``consent`` when one property may hold any purpose).
    ``missing``: mapped entries the source lacks. ``native``: the source's own names
    (columns, API fields) for "did you mean" suggestions. ``source``: what was inspected,
    for messages (a file, an API). ``verified``: False when the adapter could only report
    its mapping, not look at the live source.
    """

    provided: frozenset[str]
    missing: tuple[MissingField, ...] = ()
    native: tuple[str, ...] = ()
    source: str = ""
    verified: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class ReadProblem:
    """A record the adapter could not read: reported, then skipped.

    It says where the record is (``location``: ``file:line``, an address at the source), its
    ``key`` when known, the column or native ``field`` at fault and what that should have
    held (``expected``), and for a repeated key where the first one is (``first_at``). It
    has no room for a value: a malformed cell may belong to a field no policy shares, and
    problems reach summaries, ``--json``, log lines and the state store.

    A problem with a ``key`` holds that record: the engine neither shares it anew nor takes
    back what the targets have, as it would for a record the source no longer lists.
    ``consent`` is what conflicting evidence for that key says together
    (:func:`connector_core.consent.combine_blocks`): a purpose a job needs that some piece
    of evidence refuses is still taken back.
    """

    location: str
    expected: Expected
    field: str | None = None
    key: str | None = None
    first_at: str | None = None
    consent: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.expected, Expected):
            raise TypeError(
                "ReadProblem takes an Expected, not a message: a problem never quotes a value"
            )

    def __str__(self) -> str:
        about = [f"record {self.key!r}"] if self.key is not None else []
        about += [f"field {self.field!r}"] if self.field is not None else []
        where = ": ".join([self.location, ", ".join(about)]) if about else self.location
        first = f" (first at {self.first_at})" if self.first_at else ""
        return f"{where}: expected {self.expected.value}{first}"


@dataclasses.dataclass(frozen=True, slots=True)
class KnownRows:
    """What the engine tells a ``row_fingerprints`` adapter before a read.

    ``fingerprints``: the rows decided at the cursor of this read, as the adapter
    fingerprinted them then (:attr:`Page.fingerprints` of that read). A row whose fingerprint
    is in it is unchanged: the adapter lists its id in :attr:`Page.skipped` instead of
    decoding it. ``decode``: source ids to decode and return whatever their fingerprint (the
    changes still outstanding at the target). Empty sets: decode every row (a full read
    that reports fingerprints).

    A fingerprint is a 64-bit number the adapter computes from a row's raw form and from
    everything decoding depends on (the header, the settings, the mapping, the requested
    fields), so that a known fingerprint means: decoding this row again gives the same
    record. Rows with read problems, and rows merged with others (a repeated key), get none.
    """

    fingerprints: Collection[int] = frozenset()
    decode: Container[str] = frozenset()
    blocks: KnownBlocks | None = None


class KnownBlocks(abc.ABC):
    """The blocks of rows a ``row_fingerprints`` adapter reported at the cursor of a read
    (:attr:`Page.blocks`), as the engine kept them: what lets a read skip a whole unchanged
    block without splitting it into rows.

    A block is a run of whole rows, cut where the adapter's content says (so that an
    inserted or deleted row changes its own block only), named by a digest of its bytes
    and of everything decoding depends on. A digest this holds (``digest in blocks``) names
    rows the engine decided at the cursor and may skip now: the adapter lists such a block
    in :attr:`Page.unchanged` instead of its rows. Blocks holding an id the engine asked to
    decode (``KnownRows.decode``) are not held.
    """

    @abc.abstractmethod
    def __contains__(self, digest: object) -> bool:
        """Whether the block named `digest` was decided at the cursor and may be skipped."""

    @abc.abstractmethod
    def ids(self, digests: Collection[bytes]) -> Collection[str]:
        """The source ids of the rows of the blocks `digests` (all held); maybe a list, so
        test many ids against it with a set of those (``set.isdisjoint``)."""

    @abc.abstractmethod
    def rows(self, unchanged: Collection[bytes]) -> Collection[int]:
        """The fingerprints of the rows decided at the cursor, but those of the blocks
        `unchanged`: the rows a read that skipped those blocks may skip one by one."""

    def parts(self, unchanged: Collection[bytes] = ()) -> Mapping[bytes, tuple[bytes, int]]:
        """The parts of the held blocks (:attr:`Block.parts`) but those of the blocks
        `unchanged`, by digest: each part's block and its number in the block (0 is the
        first). A part found unchanged in a block that changed names rows the read may list
        without splitting them: their ids and fingerprints are the block's
        (:meth:`block_rows`). None here; the engine's are kept with the blocks."""
        return {}

    def block_rows(self, digests: Collection[bytes]) -> Mapping[bytes, tuple[list[str], Any]]:
        """The ids and fingerprints (a sequence of ints) of the rows of each held block of
        `digests`, in order."""
        return {}


#: The bytes of a part's digest in :attr:`Block.parts`.
PART_DIGEST = 16


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    """A block of rows a read decoded or listed (see :class:`KnownBlocks`): its digest, and
    the source id and fingerprint of each of its rows, in order.

    ``parts`` (optional): the digests of the block's runs of rows, :data:`PART_DIGEST`
    bytes each, in order, when every row of the block has an id (how many rows a part
    holds is the adapter's to say): a later read finds the unchanged parts of a block
    that changed (:meth:`KnownBlocks.parts`)."""

    digest: bytes
    ids: list[str]
    fingerprints: list[int]
    parts: bytes = b""


@dataclasses.dataclass(slots=True)
class Page:
    """One page of canonical records.

    ``cursor`` is what the engine stores once this page is processed and hands back to the
    next :meth:`Adapter.read`. ``snapshot`` is true when the read lists every record of the
    source (so a missing id means the record was deleted).

    With ``row_fingerprints`` (a read given ``known=``): ``skipped`` lists the ids of rows
    not decoded because their fingerprint was known (they count as seen: a snapshot still
    lists them), and ``fingerprints`` maps the source id of each row the engine may treat
    as known at the read's last cursor (decoded rows and skipped ones) to its fingerprint.
    ``blocks`` gives the same for rows the adapter cut into blocks (their fingerprints are in
    a block instead of ``fingerprints``, maybe on a later page than their record), and
    ``unchanged`` names the known blocks (``KnownRows.blocks``) found whole and unchanged:
    their rows count as seen and stay known, neither decoded nor listed one by one.
    """

    records: list[Record]
    cursor: str | None = None
    problems: list[ReadProblem] = dataclasses.field(default_factory=list)
    snapshot: bool = False
    skipped: list[str] = dataclasses.field(default_factory=list)
    fingerprints: dict[str, int] = dataclasses.field(default_factory=dict)
    blocks: list[Block] = dataclasses.field(default_factory=list)
    unchanged: list[bytes] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One write: upsert ``record`` under ``key``, or delete ``key``."""

    action: Literal["upsert", "delete"]
    key: str
    record: Record | None = None

    @classmethod
    def upsert(cls, key: str, record: Record) -> Change:
        """Create or replace the target record with this key."""
        return cls("upsert", key, record)

    @classmethod
    def delete(cls, key: str) -> Change:
        """Remove the target record with this key (a no-op when it is already gone)."""
        return cls("delete", key)


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one :class:`Change`; ``error`` is None on success."""

    key: str
    action: Literal["created", "updated", "deleted", "unchanged", "failed"]
    error: str | None = None
    version: str | None = None

    @property
    def ok(self) -> bool:
        """True unless the change failed."""
        return self.action != "failed"


class WriteSession:
    """One run's writes to a target: batches of changes in, then one :meth:`commit`.

    The engine opens a session (:meth:`Adapter.open_writes`) before the first batch of a run
    that changes anything, hands it every batch in order (:meth:`write`), and calls
    :meth:`commit` once after the last one, or :meth:`abort` when the run stops early. A
    target that can only be replaced whole (a file) collects the batches and writes once at
    :meth:`commit`, so a run costs one target operation instead of one per batch.

    ``deferred`` tells the engine when a result is final. False (the default session,
    :class:`ImmediateWrites`): each batch is done at the target when :meth:`write` returns,
    and the engine records it at once. True: the results :meth:`write` returns are what the
    target *will* hold once :meth:`commit` succeeds; nothing is visible before. The engine
    then records every batch only after :meth:`commit` returned; if it raises, or the
    process dies first, the batches stay outstanding in the intent log and the next run
    decides them again. A deferred session's :meth:`commit` is all or nothing.

    Use it as a context manager: leaving it without :meth:`commit` aborts it.
    """

    #: True when results are final only once :meth:`commit` returned.
    deferred: ClassVar[bool] = False

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Apply (or, deferred, stage) `changes`, yielding one result per change, in order."""
        raise NotImplementedError

    def commit(self) -> None:
        """Make every staged change visible at the target, in one operation if the tool
        allows; raise :class:`~connector_core.errors.AdapterError` if it cannot (then none
        of them is, for a deferred session)."""

    def abort(self) -> None:
        """Drop what was staged and release temporary files; a no-op after :meth:`commit`."""

    @classmethod
    def commit_many(cls, sessions: Sequence[WriteSession]) -> list[ConnectorError | None]:
        """Commit `sessions` (of this class, each to its own target, for a group of jobs
        that read one source together) as :meth:`commit` commits each, in fewer operations
        where the tool allows: a file target syncs the disk once for all its files.

        Returns, in order, None for each session committed, or the ConnectorError its
        :meth:`commit` would have raised: that session's job alone stops (a deferred
        session stays all or nothing). The engine calls it instead of :meth:`commit` for
        the sessions it gets, and not :meth:`commit` after it. Any other exception is a
        bug and stops the group. The default commits each session in turn."""
        found: list[ConnectorError | None] = []
        for session in sessions:
            try:
                session.commit()
            except ConnectorError as exc:
                found.append(exc)
            else:
                found.append(None)
        return found

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class ImmediateWrites(WriteSession):
    """The default session: each batch goes to :meth:`Adapter.write` and is final at once."""

    deferred: ClassVar[bool] = False

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """The adapter's :meth:`Adapter.write`."""
        return self.adapter.write(changes)


class Adapter(abc.ABC):
    """One external tool. Set the class attributes and implement read (and write, if it can).

    Args:
        settings: a validated instance of :attr:`settings_model`.
        secrets: resolves the settings' :class:`~connector_core.credentials.SecretRef` values.
        mapping: the connection's overrides of :attr:`default_mapping`.
        connection: the connection's name in connector.yaml, for messages.
    """

    name: ClassVar[str]
    settings_model: ClassVar[type[AdapterSettings]] = AdapterSettings
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.READ})
    default_mapping: ClassVar[Mapping[str, str]] = {}
    description: ClassVar[str] = ""

    def __init__(
        self,
        settings: AdapterSettings,
        secrets: SecretLookup | None = None,
        *,
        mapping: Mapping[str, str | None] | None = None,
        connection: str | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets or NoSecrets()
        self.mapping = FieldMapping.merged(self.default_mapping, mapping or {})
        self.connection = connection or self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} connection={self.connection!r}>"

    @property
    def page_size(self) -> int:
        """Records per page, from the settings."""
        return self.settings.page_size

    def check(self) -> str | None:
        """Verify connectivity and credentials; raise :class:`AdapterError` with a hint.

        Read-only (``connector doctor`` calls it): what a run would create or change at the
        tool (a missing book, a share) is returned as a note for the admin, never done.

        Returns:
            None, or a short note for ``connector doctor`` (how many records it sees, what a
            run would create).
        """
        return None

    def check_writes(self) -> None:
        """For ``connector doctor``, when a job writes to this connection: verify that the
        credentials may write what the adapter writes (raise :class:`AdapterError` naming
        the missing permission). By default nothing is checked."""

    def schema(self) -> frozenset[str]:
        """Return the canonical fields this connection can read and write."""
        return frozenset(n for n in self.mapping.canonical_names() if n in FIELDS or "." in n)

    def available_fields(self) -> SourceFields | None:
        """What the live source holds now, for the schema check before every run.

        The engine refuses to run a job (a configuration error) when a mapped entry the
        admin wrote is in ``missing``, or when the job's policy tests or shows a field (or
        requires a consent purpose) that is not in ``provided``. The default, None, means
        "cannot tell": nothing is checked for this connection. Override it when the tool
        can list its fields cheaply (a header, a fields API); raise AdapterError when the
        source cannot be reached.
        """
        return None

    def count(self) -> int | None:
        """How many records the source holds now (shown by ``connector doctor``).

        The default reads every record's id once; override it with a cheap count (a row
        count query) or return None when counting would cost too much.
        """
        total = 0
        for page in self.read(cursor=None, fields=frozenset({"id"})):
            total += len(page.records)
        return total

    @abc.abstractmethod
    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        """Yield pages of canonical records changed since `cursor`; never load a whole table.

        Args:
            cursor: the last page's cursor from a previous read, or None for everything.
            fields: canonical fields to fetch (``id`` is always included); None for all.
            where: a pushdown condition; adapters without ``pushdown`` may ignore it, since
                the engine filters again locally.

        Adapters with ``Capability.ROW_FINGERPRINTS`` also take ``known``
        (:class:`KnownRows`, passed by keyword only to them).

        Returns:
            An iterator of :class:`Page`; a read with no changes yields one empty page whose
            cursor is unchanged.
        """

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Apply changes idempotently, yielding one result per change, in order."""
        raise WriteNotSupported(
            f"the {self.name} adapter is read-only",
            hint="Use this connection as a job's source, not its target.",
        )

    def open_writes(self) -> WriteSession:
        """A session for one run's writes (see :class:`WriteSession`).

        The default writes each batch through :meth:`write` at once. Override it when the
        tool writes cheaper in one go (a file replaced whole, a bulk API, a transaction):
        return a session whose ``deferred`` is True and that writes at
        :meth:`WriteSession.commit`.
        """
        return ImmediateWrites(self)

    def close(self) -> None:
        """Release connections and files."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """A JSON-ready description: name, capabilities, module and distribution."""
        return {
            "name": cls.name,
            "description": cls.description or (cls.__doc__ or "").strip().splitlines()[0],
            "capabilities": sorted(c.value for c in cls.capabilities),
            "module": cls.__module__,
        }
