"""The settings of a CiviCRM connection, validated when connector.yaml is loaded."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from connector_core.adapters import AdapterSettings, ConfigPath
from connector_core.credentials import SecretRef

UrlStyle = Literal["standalone", "drupal", "drupal7", "wordpress", "wordpress-clean", "joomla"]

#: Contact flags a consent purpose can be read from (reference §4.1); all default to false.
FLAG_FIELDS = frozenset(
    {"is_opt_out", "do_not_email", "do_not_phone", "do_not_mail", "do_not_sms", "do_not_trade"}
)
GroupStatus = Literal["Added", "Removed", "Pending"]
_CUSTOM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConsentRule(BaseModel):
    """How one consent purpose is read from (and written to) CiviCRM.

    Exactly one of ``field`` or ``group``:

    * ``field``: a contact flag (``is_opt_out``, ``do_not_email`` …) or a custom field
      ``Custom_Group.field_name``; consent is granted when its value equals ``granted_when``.
      Flags are never empty in CiviCRM, so every contact has evidence for such a purpose; an
      empty custom field is no evidence (the purpose is absent: no consent).
    * ``group``: the title of a group; ``granted`` when the contact's membership status is in
      ``granted_statuses`` (default Added), refused when in ``refused_statuses`` (default
      Removed), and absent (no consent) otherwise, e.g. Pending or never a member.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str | None = Field(
        None,
        description="A contact flag such as is_opt_out or do_not_email, or a custom field "
        "written Custom_Group.field_name",
    )
    granted_when: bool | None = Field(
        None,
        description="The field value that means consent; default false for the is_opt_out "
        "and do_not_* flags (not opted out = granted), true for custom fields",
    )
    group: str | None = Field(None, description="The title of a group whose membership is consent")
    granted_statuses: tuple[GroupStatus, ...] = Field(
        ("Added",), description="Membership statuses that mean consent is granted"
    )
    refused_statuses: tuple[GroupStatus, ...] = Field(
        ("Removed",), description="Membership statuses that mean consent is refused"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ConsentRule:
        if (self.field is None) == (self.group is None):
            raise ValueError("write exactly one of `field:` or `group:` for a consent purpose")
        custom = self.field is not None and self.field not in FLAG_FIELDS
        if custom and not _CUSTOM_RE.match(self.field or ""):
            raise ValueError(
                f"{self.field!r} is neither a contact flag ({', '.join(sorted(FLAG_FIELDS))})"
                " nor a custom field written Custom_Group.field_name"
            )
        if set(self.granted_statuses) & set(self.refused_statuses):
            raise ValueError("a status cannot both grant and refuse consent")
        return self

    @property
    def is_flag(self) -> bool:
        """True for a built-in contact flag (never empty)."""
        return self.field in FLAG_FIELDS

    @property
    def granted_value(self) -> bool:
        """The field value that means granted."""
        if self.granted_when is not None:
            return self.granted_when
        return not self.is_flag


class CivicrmSettings(AdapterSettings):
    """A CiviCRM 5.x/6.x site reached over APIv4 (``civicrm/ajax/api4``)."""

    #: How it connects, not what it reads or writes: a change rewrites nothing.
    neutral_settings: ClassVar[frozenset[str]] = AdapterSettings.neutral_settings | {
        "timeout",
        "verify_tls",
        "ca_bundle",
    }

    url: HttpUrl = Field(description="The site's base URL, e.g. https://crm.example.org")
    url_style: UrlStyle = Field(
        "standalone",
        description="How the CMS wraps CiviCRM's routes: standalone and drupal (Drupal 8+) use "
        "/civicrm/ajax/api4/…; drupal7 uses ?q=civicrm/…; wordpress uses ?civiwp=CiviCRM&q=…; "
        "wordpress-clean uses /<wordpress_base_page>/ajax/api4/…/; joomla uses "
        "/administrator/index.php?option=com_civicrm&task=…",
    )
    wordpress_base_page: str = Field(
        "civicrm", description="The slug of WordPress's CiviCRM base page (wordpress-clean only)"
    )
    api_key: SecretRef = Field(
        description="The API user's key or a JWT, sent as `X-Civi-Auth: Bearer …`; e.g. "
        "{secret: api_key}"
    )
    auth: Literal["api_key", "jwt"] = Field(
        "api_key",
        description="What api_key holds: an API key (at most 32 characters) or a JWT minted "
        "by AuthxCredential.create; both are sent the same way",
    )
    site_key: SecretRef | None = Field(
        None,
        description="CIVICRM_SITE_KEY, sent as X-Civi-Key; needed when the API user lacks "
        "the 'authenticate with api key' permission",
    )
    timeout: float = Field(60.0, gt=0, le=600, description="Seconds to wait for one answer")
    verify_tls: bool = Field(True, description="Verify the server's TLS certificate")
    ca_bundle: ConfigPath | None = Field(
        None, description="A CA bundle (PEM) for a server with a private certificate authority"
    )
    contact_type: Literal["Individual", "Organization", "Household"] | None = Field(
        "Individual", description="Read and write only contacts of this type; null for all"
    )
    consent: dict[str, ConsentRule] = Field(
        default_factory=dict,
        description="Consent purpose -> where CiviCRM holds it, e.g. "
        "{contact_me: {field: is_opt_out}, local_organizing: {group: Local organizing}}",
    )
    custom_fields: dict[str, str] = Field(
        default_factory=dict,
        description="Name -> custom field Custom_Group.field_name, read into "
        "extra.civicrm.<name> and written back from it",
    )
    delete_mode: Literal["trash", "permanent"] = Field(
        "trash",
        description="How a delete removes a contact: trash (restorable) or permanent (needs "
        "the 'delete contacts' permission)",
    )
    group_for_writes: str | None = Field(
        None,
        description="Title of a group every contact this connection writes is added to",
    )
    create_missing: bool = Field(
        True, description="Create groups and tags named in written records when missing"
    )

    @field_validator("consent")
    @classmethod
    def _purpose_names(cls, value: dict[str, ConsentRule]) -> dict[str, ConsentRule]:
        bad = [k for k in value if not re.match(r"^[a-z][a-z0-9_]*$", k)]
        if bad:
            raise ValueError(f"consent purposes must be lowercase identifiers, not {bad}")
        return value

    @field_validator("custom_fields")
    @classmethod
    def _custom_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not _NAME_RE.match(name):
                raise ValueError(f"{name!r} must be an identifier (it becomes extra.civicrm.NAME)")
            if not _CUSTOM_RE.match(path):
                raise ValueError(f"{path!r} must be written Custom_Group.field_name")
        return value

    def extra_fields(self) -> frozenset[str]:
        """``custom_fields:`` entries, as the ``extra.civicrm.<name>`` fields they fill."""
        return frozenset(f"extra.civicrm.{name}" for name in self.custom_fields)

    @property
    def base_url(self) -> str:
        """The site URL without a trailing slash."""
        return str(self.url).rstrip("/")

    @property
    def verify(self) -> bool | str:
        """What requests' ``verify`` gets: the CA bundle path, or the flag."""
        if self.ca_bundle is not None and self.verify_tls:
            return str(self.ca_bundle)
        return self.verify_tls
