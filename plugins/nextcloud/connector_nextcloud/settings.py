"""The settings of a Nextcloud (or any CardDAV server) address-book connection."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, HttpUrl, model_validator

from connector_core.adapters import AdapterSettings, ConfigPath, remote_place
from connector_core.credentials import SecretRef

#: The property that marks cards this connector wrote; it never touches cards without it.
MARKER_PROPERTY = "X-COMMONS-CONNECTOR"

#: Nextcloud's read-only, generated books: never a target, never "our" data.
_SYSTEM_BOOKS = ("z-server-generated--", "z-app-generated--")


class NextcloudSettings(AdapterSettings):
    """A CardDAV address book: on Nextcloud by name, on any server by its full URL."""

    #: How it connects, not what it reads or writes: a change rewrites nothing.
    neutral_settings: ClassVar[frozenset[str]] = AdapterSettings.neutral_settings | {
        "timeout",
        "verify_tls",
        "ca_bundle",
        "concurrency",
        "multiget_batch",
    }

    url: HttpUrl | None = Field(
        None,
        description="The Nextcloud server, e.g. https://cloud.example.org (with `address_book`).",
    )
    user: str | None = Field(
        None,
        description="The Nextcloud (or CardDAV) login name; with `app_password` for HTTP Basic.",
    )
    app_password: SecretRef | None = Field(
        None,
        description="An app password (Nextcloud → Settings → Security → Devices & sessions), "
        "written `{secret: app_password}`; omit only for servers without authentication.",
    )
    address_book: str | None = Field(
        None,
        description="The book's name under /remote.php/dav/addressbooks/users/{user}/ "
        "(Nextcloud); the default book is `contacts`.",
    )
    address_book_url: HttpUrl | None = Field(
        None,
        description="The book's full URL; works with any CardDAV server (Radicale, Xandikos, "
        "Baikal, SOGo). Use this instead of `url` + `address_book`.",
    )
    verify_tls: bool = Field(True, description="Verify the server's TLS certificate.")
    ca_bundle: ConfigPath | None = Field(
        None, description="A PEM file of CA certificates for a server with a private CA."
    )
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for each server answer.")
    vcard_version: Literal["3.0", "4.0"] = Field(
        "3.0",
        description="The vCard version written (both are read). 3.0 is what Nextcloud "
        "Contacts and most phones show best.",
    )
    consent_property: str | None = Field(
        "X-COMMONS-CONSENT",
        pattern=r"^X-[A-Z0-9-]+$",
        description="The vCard property holding consent, one per purpose, e.g. "
        "`X-COMMONS-CONSENT:local_organizing=yes`; null to not map consent this way.",
    )
    consent_categories: dict[str, str] = Field(
        default_factory=dict,
        description="Purpose → a CATEGORIES value that means consent given, e.g. "
        "`{local_organizing: ok-local}`; such categories are not read as groups.",
    )
    groups_from: Literal["categories"] | None = Field(
        "categories",
        description="Where `groups` live in a card: CATEGORIES (what Nextcloud Contacts shows "
        "as groups), or null to not map groups.",
    )
    marker: str = Field(
        "commons-connector",
        min_length=1,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description=f"The value of the {MARKER_PROPERTY} property written on our cards.",
    )
    concurrency: int = Field(
        1, ge=1, le=16, description="Parallel PUT/DELETE requests while writing (bounded)."
    )
    multiget_batch: int = Field(
        200, ge=1, le=2000, description="Cards fetched per addressbook-multiget request."
    )
    sync_limit: int | None = Field(
        None,
        ge=1,
        description="Ask for at most this many changes per sync-collection answer (RFC 6578 "
        "paging, which Nextcloud supports); null asks for all at once. A server that "
        "truncates without saying so (Xandikos) is detected and asked again without a limit.",
    )
    create_book: bool = Field(
        False, description="Create the address book (extended MKCOL) when it does not exist."
    )
    share_with_group: str | None = Field(
        None,
        description="Nextcloud only: share the book read-only with this group (oc:share).",
    )

    @model_validator(mode="after")
    def _one_location(self) -> NextcloudSettings:
        if self.address_book_url is not None:
            if self.address_book is not None:
                raise ValueError("give either `address_book_url` or `address_book`, not both")
            return self
        if self.address_book is not None and self.address_book.startswith(_SYSTEM_BOOKS):
            raise ValueError(
                f"{self.address_book!r} is a Nextcloud system address book; "
                "use a book made for this audience"
            )
        if self.url is None or self.user is None or self.address_book is None:
            raise ValueError(
                "give `address_book_url` (any CardDAV server), or `url`, `user` and "
                "`address_book` (Nextcloud)"
            )
        return self

    def target_identity(self) -> frozenset[str]:
        """The address book's URL, however url/user/address_book or address_book_url spell it."""
        return frozenset({"carddav:" + remote_place(self.book_url)})

    @property
    def book_url(self) -> str:
        """The address book's URL, ending with a slash."""
        if self.address_book_url is not None:
            return str(self.address_book_url).rstrip("/") + "/"
        assert self.url is not None
        assert self.user is not None
        assert self.address_book is not None
        base = str(self.url).rstrip("/")
        user, book = quote(self.user, safe=""), quote(self.address_book, safe="")
        return f"{base}/remote.php/dav/addressbooks/users/{user}/{book}/"
