"""File exports: a job's projection as ONE CSV file in a Nextcloud (or any WebDAV) folder.

The file is a keyed table (column ``id``), like the CSV adapter's file. ``write(changes)``:

1. GETs the current file and its ETag (404: the file does not exist yet, start empty);
   MKCOLs the folder and its parents if they are missing;
2. applies the upserts and deletes by key; if nothing changed, stops (no upload at all);
3. renders the CSV (cells a spreadsheet could run as formulas get a leading ``'`` and control
   characters are dropped: :mod:`connector_core.cells`) and PUTs
   it under a temporary name in the same folder, ``.<file>.<random>.tmp`` (not ``.part``:
   Nextcloud rejects ``*.part`` and ``*.filepart`` names, which it uses for its own uploads);
4. MOVEs the temporary file over the final name (``Overwrite: T``), so readers only ever see
   the old or the new file whole. The MOVE is conditional: ``If: <final> (["etag"])`` (the
   RFC 4918 tagged form, which applies to the destination; a plain ``If-Match`` on a MOVE
   applies to the *source*, i.e. the temporary file) when the file existed, or
   ``Overwrite: F`` when it did not. A 412 means someone changed the file between the GET and
   the MOVE: the temporary file is deleted, the file is read again, the same changes are
   applied to the new content and the upload is tried once more; a second 412 fails the write
   (retriable: the next run tries again). Rows other people added stay; rows this job
   writes are replaced by key.
5. deletes the temporary file whenever the upload or the MOVE fails.

With ``share_with_group`` the folder is shared through OCS before the first upload (and the
OCS answer, the share itself, confirms it): a share that fails stops the write before any data
reaches the folder, so nothing is written that the ledger would not record.

A run writes through a deferred session (:meth:`NextcloudFilesAdapter.open_writes`): the file
is downloaded once, at the first batch with changes, every batch is applied to that table and
answered at once, and the commit uploads and MOVEs it once (steps 3-5), one GET and one PUT
per run instead of one per batch. A 412 at the commit (someone changed the file since the
download) fails the commit (retriable): the run records none of its batches, and the next
run decides them again on the new content, so every result the ledger keeps is one the
uploaded file shows.

``read()`` parses the file back (one snapshot, in pages). Optionally the folder is shared
with a Nextcloud group through the OCS shares API (see :mod:`connector_nextcloud.ocs`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import secrets as _random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import requests
from pydantic import Field, SecretStr, field_validator, model_validator

from connector_core.adapters import (
    Adapter,
    AdapterSettings,
    Capability,
    Change,
    ConfigPath,
    Page,
    ReadProblem,
    WriteResult,
    WriteSession,
    remote_place,
)
from connector_core.cells import neutralize, unneutralize
from connector_core.credentials import SecretLookup, SecretRef
from connector_core.errors import AdapterError, AdapterUnavailable, AuthenticationFailed
from connector_core.http import http_errors, make_session, raise_for_auth
from connector_core.query import Condition
from connector_core.records import (
    FIELDS,
    Expected,
    FieldType,
    Record,
    ValueInvalid,
    coerce,
    consent_purpose,
    is_extra,
    parse_bool,
)
from connector_nextcloud.ocs import OcsClient

__all__ = ["FilesSettings", "NextcloudFilesAdapter"]

log = logging.getLogger(__name__)

AUTH_HINT = (
    "Create an app password in Nextcloud (Settings → Security → Devices & sessions) and store "
    "it with `connector credentials set CONNECTION app_password`; do not use the login password."
)
KEY_COLUMN = "id"
TEMP_SUFFIX = ".tmp"  # not .part: Nextcloud refuses *.part and *.filepart names (its own)
_CONFLICT_ATTEMPTS = 2  # the first try, and one more after a concurrent edit

# -- settings ---------------------------------------------------------------------------------


class FilesSettings(AdapterSettings):
    """Where the export file lives, how to log in, and whom to share its folder with."""

    #: How it connects, not what it reads or writes: a change rewrites nothing.
    neutral_settings: ClassVar[frozenset[str]] = AdapterSettings.neutral_settings | {
        "timeout",
        "verify_tls",
        "ca_bundle",
    }

    url: str | None = Field(
        default=None, description="Nextcloud base URL, e.g. https://cloud.example.org"
    )
    user: str | None = Field(default=None, description="Nextcloud user (owner of the folder)")
    app_password: SecretRef | None = Field(
        default=None, description="App password for HTTP Basic, e.g. {secret: app_password}"
    )
    folder: str = Field(
        default="", description="Folder below the user's files, e.g. 'Shared/Organizers North'"
    )
    file_name: str = Field(default="contacts.csv", description="Name of the CSV file")
    webdav_url: str | None = Field(
        default=None,
        description="Full URL of the folder on any WebDAV server (instead of url/folder)",
    )
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate")
    ca_bundle: ConfigPath | None = Field(
        default=None, description="CA bundle (PEM) for a server with a private CA"
    )
    share_with_group: str | None = Field(
        default=None, description="Share the folder with this Nextcloud group (OCS API)"
    )
    share_permissions: Literal["read"] = Field(
        default="read", description="Permissions of the group share (read only)"
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    write_bom: bool = Field(
        default=True, description="Start the file with a UTF-8 BOM (spreadsheets need it)"
    )
    phone_numbers: Literal["prefixed", "plain"] = Field(
        default="prefixed",
        description="Cells that are only a phone number (+ then digits, spaces and ( ) . / -): "
        "prefixed with ' like any cell starting with + (safe everywhere), or plain (no "
        "formula can hide in them; LibreOffice shows them as text, a program that evaluates "
        "cells starting with + may show +1-555-0100 as -654)",
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds to wait for the server")

    @field_validator("file_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value in {".", ".."} or value.startswith("."):
            raise ValueError("file_name must be a plain, visible file name like contacts.csv")
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if value in {'"', "'", "\r", "\n"}:
            raise ValueError("the delimiter cannot be a quote or a line break")
        return value

    @model_validator(mode="after")
    def _where(self) -> FilesSettings:
        if (self.url is None) == (self.webdav_url is None):
            raise ValueError("give either url (with user and folder) or webdav_url, not both")
        if self.url is not None and not self.user:
            raise ValueError("url needs user: the files live under /remote.php/dav/files/USER/")
        if self.share_with_group is not None and self.url is None:
            raise ValueError("share_with_group needs url: the OCS shares API is Nextcloud's")
        for name in ("url", "webdav_url"):
            value = getattr(self, name)
            if value is not None and urlsplit(value).scheme not in {"http", "https"}:
                raise ValueError(f"{name} must be an http(s) URL")
        if self.app_password is not None and not self.user:
            raise ValueError("app_password needs user")
        return self

    def folder_url(self) -> str:
        """The folder's WebDAV URL, with a trailing slash."""
        if self.webdav_url is not None:
            return self.webdav_url.rstrip("/") + "/"
        assert self.url is not None
        assert self.user is not None
        base = f"{self.url.rstrip('/')}/remote.php/dav/files/{quote(self.user, safe='')}/"
        return base + _quoted_folder(self.folder)

    def target_identity(self) -> frozenset[str]:
        """The export file's URL, however url/user/folder or webdav_url spell it."""
        return frozenset({"webdav:" + remote_place(self.folder_url() + quote(self.file_name))})

    def root_url(self) -> str:
        """The deepest URL MKCOL never needs to create (the user's files root, or the host)."""
        if self.webdav_url is not None:
            parts = urlsplit(self.webdav_url)
            return f"{parts.scheme}://{parts.netloc}/"
        assert self.url is not None
        assert self.user is not None
        return f"{self.url.rstrip('/')}/remote.php/dav/files/{quote(self.user, safe='')}/"

    def share_path(self) -> str:
        """The folder's path as the OCS API names it: ``/Shared/Organizers North``."""
        return "/" + "/".join(_segments(self.folder))


def _segments(folder: str) -> list[str]:
    parts = [p for p in folder.strip("/").split("/") if p]
    if any(p in {".", ".."} for p in parts):
        raise ValueError("folder must not contain '.' or '..'")
    return parts


def _quoted_folder(folder: str) -> str:
    parts = _segments(folder)
    return "".join(quote(p, safe="") + "/" for p in parts)


# -- columns ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Column:
    canonical: str
    name: str
    purpose: str | None = None


class _Codec:
    """Canonical records ↔ CSV cells, by the connection's mapping (canonical → column)."""

    def __init__(self, mapping: Mapping[str, str], source: str) -> None:
        order = {name: i for i, name in enumerate(FIELDS)}
        columns = []
        for canonical, name in mapping.items():
            if canonical == KEY_COLUMN:
                continue
            purpose = consent_purpose(canonical)
            if canonical in FIELDS and canonical != "consent":
                columns.append((0, order[canonical], _Column(canonical, name)))
            elif purpose is not None:
                columns.append((1, 0, _Column(canonical, name, purpose)))
            elif is_extra(canonical):
                columns.append((2, 0, _Column(canonical, name)))
            else:
                raise AdapterError(
                    f"{canonical!r} in the mapping is not a canonical field",
                    hint="Map canonical fields, consent.<purpose> or extra.<adapter>.<name>.",
                )
        self.columns = tuple(c for _, _, c in sorted(columns, key=lambda t: t[:2]))
        self.source = source

    def header_for(self, records: Sequence[Record]) -> list[str]:
        """Columns some record has a value for (a recipient sees no empty, unshared columns)."""
        present = {name for record in records for name, value in record.items() if value}
        consent = {
            p for r in records if isinstance(r.get("consent"), Mapping) for p in r["consent"]
        }
        return [
            c.name
            for c in self.columns
            if c.canonical in present or (c.purpose is not None and c.purpose in consent)
        ]

    def render(self, record: Record) -> dict[str, str]:
        """The cells of `record` by column name, not yet neutralised."""
        cells: dict[str, str] = {}
        for column in self.columns:
            text = self._render(column, record)
            if text or column.name not in cells:
                cells[column.name] = text
        return cells

    def _render(self, column: _Column, record: Record) -> str:
        if column.purpose is not None:
            consent = record.get("consent")
            state = consent.get(column.purpose) if isinstance(consent, Mapping) else None
            if isinstance(state, Mapping):
                state = state.get("granted")
            return "" if state is None else ("yes" if state else "no")
        value = record.get(column.canonical)
        if value is None:
            return ""
        field = FIELDS.get(column.canonical)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if field is not None and field.type is FieldType.LIST:
            if isinstance(value, str):
                return value
            return ";".join(str(item) for item in value)
        if hasattr(value, "isoformat"):
            return str(value.isoformat())
        return str(value)

    def decode(self, cells: Mapping[str, str], fields: frozenset[str] | None) -> Record:
        """The record in one row (cells already un-neutralised); raises CellInvalid."""
        record: Record = {"id": cells[KEY_COLUMN]}
        for column in self.columns:
            if column.name in cells:
                try:
                    self._fill(record, column, cells[column.name], fields)
                except ValueInvalid as exc:
                    raise CellInvalid(exc.expected, column.name) from None
        return record

    def _fill(
        self, record: Record, column: _Column, text: str, fields: frozenset[str] | None
    ) -> None:
        wanted = fields is None or column.canonical in fields
        if column.purpose is not None:
            if fields is not None and "consent" not in fields and not wanted:
                return
            granted = parse_bool(text)
            if granted is not None:
                record.setdefault("consent", {})[column.purpose] = {
                    "granted": granted,
                    "source": self.source,
                    "at": None,
                }
        elif wanted:
            field = FIELDS.get(column.canonical)
            record[column.canonical] = coerce(field, text) if field else (text or None)


class CellInvalid(ValueError):
    """A cell that does not fit its column: which column, and what it should hold."""

    def __init__(self, expected: Expected, column: str) -> None:
        super().__init__(f"column {column!r}: expected {expected.value}")
        self.expected = expected
        self.column = column


# -- the table ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Table:
    """The file's rows by key, cells as stored (neutralised), other columns kept."""

    header: list[str]
    rows: dict[str, dict[str, str]]  # key (plain) -> column -> stored cell
    loose: list[list[str]]  # rows without a key, kept as they were
    plain_phones: bool = False  # settings.phone_numbers == "plain"
    changed: bool = False

    def upsert(
        self, key: str, cells: Mapping[str, str]
    ) -> Literal["created", "updated", "unchanged"]:
        for name, cell in cells.items():
            if cell and name not in self.header:
                self.header.append(name)
        stored = {name: self._safe(cell) for name, cell in cells.items() if name in self.header}
        stored[KEY_COLUMN] = self._safe(key)
        old = self.rows.get(key)
        if old is None:
            self.rows[key] = stored
            self.changed = True
            return "created"
        new = {**old, **stored}
        if _visible(new) == _visible(old):
            return "unchanged"
        self.rows[key] = new
        self.changed = True
        return "updated"

    def _safe(self, cell: str) -> str:
        return neutralize(cell, plain_phones=self.plain_phones)

    def delete(self, key: str) -> Literal["deleted", "unchanged"]:
        if self.rows.pop(key, None) is None:
            return "unchanged"
        self.changed = True
        return "deleted"

    def render(self, delimiter: str, bom: bool) -> bytes:
        out = io.StringIO(newline="")
        if bom:
            out.write("\ufeff")
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        writer.writerow([neutralize(name) for name in self.header])
        for row in self.rows.values():
            writer.writerow([row.get(name, "") for name in self.header])
        writer.writerows(self.loose)
        return out.getvalue().encode("utf-8")


def _visible(row: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in row.items() if v}


def _parse(content: bytes, delimiter: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header and the numbered rows of CSV bytes (UTF-8, with or without a BOM)."""
    text = content.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [unneutralize(h) for h in next(reader)]
    except StopIteration:
        return [], iter(())
    except csv.Error as exc:
        raise AdapterError(f"the export file's header is not valid CSV: {exc}") from None

    def rows() -> Iterator[tuple[int, list[str]]]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:
                yield reader.line_num, []
                continue
            if row:
                yield reader.line_num, row

    return header, rows()


# -- the adapter --------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Remote:
    content: bytes | None  # None: the file does not exist
    etag: str | None


class NextcloudFilesAdapter(Adapter):
    """A CSV file in a Nextcloud (or any WebDAV) folder, written whole, read back as a table."""

    name = "nextcloud_files"
    description = "A CSV export in a Nextcloud or WebDAV folder, optionally shared with a group"
    settings_model = FilesSettings
    capabilities = frozenset({Capability.READ, Capability.WRITE, Capability.DELETE})
    default_mapping: ClassVar[Mapping[str, str]] = {
        name: name for name in FIELDS if name != "consent"
    }
    settings: FilesSettings

    def __init__(
        self,
        settings: FilesSettings,
        secrets: SecretLookup | None = None,
        *,
        mapping: Mapping[str, str | None] | None = None,
        connection: str | None = None,
    ) -> None:
        super().__init__(settings, secrets, mapping=mapping, connection=connection)
        self._codec = _Codec(self.mapping.entries, f"{self.name}:{self.connection}")
        self._what = f"nextcloud_files connection {self.connection!r}"
        self._session: requests.Session | None = None
        self._folder_ready = False
        self._shared = False

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def folder_url(self) -> str:
        """The folder's WebDAV URL."""
        return self.settings.folder_url()

    @property
    def file_url(self) -> str:
        """The export file's WebDAV URL."""
        return self.folder_url + quote(self.settings.file_name, safe="")

    def _http(self) -> requests.Session:
        if self._session is None:
            verify: bool | str = self.settings.verify_tls
            if self.settings.verify_tls and self.settings.ca_bundle is not None:
                verify = str(self.settings.ca_bundle)
            session = make_session(self.name, verify=verify)
            if self.settings.app_password is not None and self.settings.user:
                password: SecretStr = self.secrets.resolve(self.settings.app_password)
                session.auth = (self.settings.user, password.get_secret_value())
            self._session = session
        return self._session

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        with http_errors(self._what):
            response = self._http().request(
                method, url, timeout=self.settings.timeout, allow_redirects=False, **kwargs
            )
        if response.status_code == 401:
            raise_for_auth(response, self._what, hint=AUTH_HINT)
        return response

    def _fail(self, response: requests.Response, doing: str) -> AdapterError:
        status = response.status_code
        message = f"{self._what}: {doing} failed (HTTP {status})"
        if status == 403:
            return AuthenticationFailed(
                message,
                hint="The user may not write there: check the folder's permissions or share.",
            )
        if status == 404:
            return AdapterError(
                message,
                hint="Check url, user and folder (a read-only share answers 404 to writes).",
            )
        if status == 507:
            return AdapterError(message, hint="The user's quota is full.")
        if status in (423, 429) or status >= 500:
            return AdapterUnavailable(message, hint="The server is busy; the next run resumes.")
        return AdapterError(message)

    def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- contract ----------------------------------------------------------------------------

    def check(self) -> str | None:
        """PROPFIND the folder: connectivity, credentials, and that the folder exists.

        Read-only: a missing folder is reported (the first write creates it), not made."""
        response = self._request("PROPFIND", self.folder_url, headers={"Depth": "0"})
        if response.status_code == 404:
            return "the folder does not exist yet: the first write creates it"
        if response.status_code not in (200, 207):
            raise self._fail(response, "looking up the folder")
        return None

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        """Yield the file's records in pages (one snapshot); an absent file reads as empty."""
        remote = self._download()
        if remote.content is None:
            yield Page([], cursor=remote.etag, snapshot=True)
            return
        header, rows = _parse(remote.content, self.settings.delimiter)
        if KEY_COLUMN not in header:
            if not header:
                yield Page([], cursor=remote.etag, snapshot=True)
                return
            raise AdapterError(
                f"{self._what}: the file has no {KEY_COLUMN!r} column",
                hint="This file was not written by the connector; point file_name elsewhere.",
            )
        records: list[Record] = []
        problems: list[ReadProblem] = []
        seen: set[str] = set()
        for line, row in rows:
            where_ = f"{self.settings.file_name}:{line}"
            if len(row) != len(header):
                problems.append(ReadProblem(where_, Expected.ROW))
            else:
                cells = {name: unneutralize(cell) for name, cell in zip(header, row, strict=True)}
                key = cells[KEY_COLUMN]
                if not key.strip():
                    problems.append(ReadProblem(where_, Expected.KEY, KEY_COLUMN))
                elif key in seen:
                    problems.append(ReadProblem(where_, Expected.UNIQUE_KEY, KEY_COLUMN, key))
                else:
                    try:
                        records.append(self._codec.decode(cells, fields))
                        seen.add(key)
                    except CellInvalid as exc:
                        problems.append(ReadProblem(where_, exc.expected, exc.column, key))
            if max(len(records), len(problems)) >= self.page_size:
                yield Page(records, problems=problems, snapshot=True)
                records, problems = [], []
        yield Page(records, cursor=remote.etag, problems=problems, snapshot=True)

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Apply `changes` to the file and replace it once (temporary upload, then MOVE)."""
        results: list[WriteResult] = []
        for attempt in range(_CONFLICT_ATTEMPTS):
            remote = self._download()
            if remote.content is None:
                self._ensure_folder()
            table = self._table(remote, [c.record for c in changes if c.record is not None])
            results = [self._apply(table, change) for change in changes]
            if not table.changed:
                break
            # Share (and have the share confirmed) before any data is uploaded: a share that
            # fails after the upload would leave the file written and no ledger row for it.
            self._ensure_folder()
            self._ensure_share()
            body = table.render(self.settings.delimiter, self.settings.write_bom)
            if self._replace(body, remote):
                break
            log.warning(
                "%s: the file changed while we wrote it; reading it again (attempt %d)",
                self._what,
                attempt + 2,
            )
        else:
            raise AdapterUnavailable(
                f"{self._what}: someone kept changing {self.settings.file_name} while we "
                "replaced it",
                hint="The next run tries again; their edits are kept.",
            )
        self._ensure_share()  # a run with nothing to upload still keeps the share in place
        return iter(results)

    def open_writes(self) -> WriteSession:
        """A deferred session: one download, every batch answered, one upload at commit."""
        return _FilesWrites(self)

    # -- writing -------------------------------------------------------------------------------

    def _download(self) -> _Remote:
        response = self._request("GET", self.file_url)
        if response.status_code == 404:
            return _Remote(None, None)
        if response.status_code != 200:
            raise self._fail(response, f"downloading {self.settings.file_name}")
        return _Remote(response.content, response.headers.get("ETag"))

    def _table(self, remote: _Remote, records: list[Record]) -> _Table:
        plain = self.settings.phone_numbers == "plain"
        if remote.content is None:
            return _Table([KEY_COLUMN, *self._codec.header_for(records)], {}, [], plain)
        header, rows = _parse(remote.content, self.settings.delimiter)
        if not header:
            return _Table([KEY_COLUMN, *self._codec.header_for(records)], {}, [], plain)
        if KEY_COLUMN not in header:
            raise AdapterError(
                f"{self._what}: {self.settings.file_name} has no {KEY_COLUMN!r} column, so it "
                "was not written by the connector; refusing to overwrite it",
                hint="Choose another file_name, or move that file away.",
            )
        table = _Table(list(header), {}, [], plain)
        for line, row in rows:
            if len(row) != len(header):
                raise AdapterError(
                    f"{self._what}: {self.settings.file_name}:{line} does not match the header",
                    hint="Fix or remove that row: rewriting the file would lose it.",
                )
            stored = dict(zip(header, row, strict=True))
            key = unneutralize(stored[KEY_COLUMN])
            if key.strip() and key not in table.rows:
                table.rows[key] = stored
            else:
                table.loose.append(row)
        return table

    def _apply(self, table: _Table, change: Change) -> WriteResult:
        if change.action == "delete":
            return WriteResult(change.key, table.delete(change.key))
        if change.record is None or not change.key.strip():
            return WriteResult(change.key, "failed", error="an upsert needs a key and a record")
        return WriteResult(change.key, table.upsert(change.key, self._codec.render(change.record)))

    def _replace(self, body: bytes, remote: _Remote) -> bool:
        """Upload `body` under a temporary name and MOVE it over the file; False on a 412."""
        temp_name = f".{self.settings.file_name}.{_random.token_hex(8)}{TEMP_SUFFIX}"
        temp_url = self.folder_url + quote(temp_name, safe="")
        moved = False
        try:
            response = self._request(
                "PUT", temp_url, data=body, headers={"Content-Type": "text/csv; charset=utf-8"}
            )
            if response.status_code not in (200, 201, 204):
                raise self._fail(response, "uploading the temporary file")
            headers = {"Destination": self.file_url, "Overwrite": "T"}
            if remote.content is None:
                headers["Overwrite"] = "F"  # it did not exist: someone else's new file wins
            elif remote.etag:
                headers["If"] = f"<{urlsplit(self.file_url).path}> ([{remote.etag}])"
            response = self._request("MOVE", temp_url, headers=headers)
            if response.status_code == 412:
                return False
            if response.status_code not in (200, 201, 204):
                raise self._fail(response, f"moving the upload onto {self.settings.file_name}")
            moved = True
            return True
        finally:
            if not moved:
                self._discard(temp_url)

    def _discard(self, temp_url: str) -> None:
        try:
            self._request("DELETE", temp_url)
        except AdapterError as exc:  # the original failure matters more
            log.warning("%s: could not delete the temporary upload: %s", self._what, exc)

    def _ensure_folder(self) -> None:
        if self._folder_ready:
            return
        self._mkcol(self.folder_url, depth=0)
        self._folder_ready = True

    def _mkcol(self, url: str, depth: int) -> None:
        root = self.settings.root_url()
        if len(url) <= len(root) or depth > 32:
            return
        response = self._request("MKCOL", url)
        if response.status_code in (201, 405):  # created, or it exists
            return
        if response.status_code == 409:  # a parent is missing
            parent = url.rstrip("/").rsplit("/", 1)[0] + "/"
            self._mkcol(parent, depth + 1)
            response = self._request("MKCOL", url)
            if response.status_code in (201, 405):
                return
        raise self._fail(response, "creating the folder")

    def _ensure_share(self) -> None:
        group = self.settings.share_with_group
        if group is None or self._shared:
            return
        assert self.settings.url is not None
        client = OcsClient(
            self.settings.url, self._http(), what=self._what, timeout=self.settings.timeout
        )
        client.ensure_group_share(self.settings.share_path(), group, permissions=1)
        self._shared = True


class _FilesWrites(WriteSession):
    """One run's writes to the export file: one GET at the first batch, one upload at commit."""

    deferred: ClassVar[bool] = True

    def __init__(self, adapter: NextcloudFilesAdapter) -> None:
        self.adapter = adapter
        self.remote: _Remote | None = None
        self.table: _Table | None = None

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Apply `changes` to the downloaded table; the results are what the upload holds."""
        adapter = self.adapter
        if self.remote is None:
            self.remote = adapter._download()
        if self.table is None or (self.remote.content is None and not self.table.changed):
            # like a download per batch: a new file's header comes from the first batch
            # that writes something
            records = [c.record for c in changes if c.record is not None]
            self.table = adapter._table(self.remote, records)
        table = self.table
        return iter([adapter._apply(table, change) for change in changes])

    def commit(self) -> None:
        """Upload the table once (temporary name, conditional MOVE); a 412 fails it."""
        adapter, table, remote = self.adapter, self.table, self.remote
        self.table = None
        if table is None or remote is None:
            return
        if table.changed:
            adapter._ensure_folder()
            adapter._ensure_share()  # before any data is uploaded (see write())
            body = table.render(adapter.settings.delimiter, adapter.settings.write_bom)
            if not adapter._replace(body, remote):
                raise AdapterUnavailable(
                    f"{adapter._what}: {adapter.settings.file_name} changed while this run "
                    "wrote it; nothing of this run was uploaded",
                    hint="The next run writes again, keeping their edits.",
                )
        adapter._ensure_share()

    def abort(self) -> None:
        """Forget the table; nothing was uploaded."""
        self.table = None
