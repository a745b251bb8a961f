"""A fake CiviCRM APIv4 server for tests, built from ``shared/reference/civicrm-apiv4.md``.

It is a real HTTP server on ``127.0.0.1`` (stdlib ``ThreadingHTTPServer``, one thread per
request, keep-alive) holding an in-memory, thread-safe CiviCRM::

    from connector_civicrm.testing import FakeCiviCRM, Faults, FaultRule

    with FakeCiviCRM(api_key="fake-civicrm-api-key", site_key=None, url_style="standalone") as fake:
        ids = fake.seed_contacts(1000)
        url = fake.api_url("Contact", "get")      # the URL for this CMS style
        requests.post(url, headers={"X-Civi-Auth": "Bearer k"},
                      data={"params": json.dumps({"select": ["id"], "limit": 10})})
        fake.count_requests("Contact", "get")     # -> 1

In pytest (the package installs a ``pytest11`` plugin), a ``fake_civicrm``
fixture (a fresh, empty fake per test, api key ``"test-key-of-the-fake"``,
site key ``"site-key-of-the-fake"``).

Constructor: ``FakeCiviCRM(api_key="fake-civicrm-api-key", site_key=None,
url_style="standalone", *, timezone="UTC", version=(6, 17), permissions=ALL_PERMISSIONS,
custom_fields=None, faults=None)``.

- ``url_style``: ``"standalone"``/``"drupal8"`` (``/civicrm/ajax/api4/{E}/{a}``), ``"drupal7"``
  (that path or ``/?q=civicrm/ajax/api4/...``), ``"wordpress"`` (front-end
  ``/?civiwp=CiviCRM&q=...`` and clean ``/civicrm/ajax/api4/.../``; a front-end ``page=CiviCRM`` is
  301-redirected to ``civiwp=``; ``/wp-admin/admin.php`` redirects to the login page),
  ``"joomla"`` (``/administrator/index.php?option=com_civicrm&task=...``) or ``"any"``. A URL
  of another style answers an HTML 404.
- ``version``: ``>= (6, 9)`` adds ``error_id`` to detailed errors; ``>= (6, 14)`` ignores a
  stray ``Authorization: Basic``. ``authx_header_cred`` (attribute, default on) enables the
  ``Authorization: Bearer`` flow; when falsy that header is ignored (anonymous, E5).
- ``custom_fields``: ``{"Group_Name.field_name": "String"|"Integer"|"Boolean"|"Date"|...}``:
  Contact custom fields, selected by name, ``custom.*`` or ``Group_Name.*`` (not ``*``).
- More API users: ``fake.add_api_key(key, permissions=..., acl_contact_ids=..., has_cms_user=...)``.
  Detailed error bodies need ``view debug output`` (the default key has every permission);
  ``acl_contact_ids`` limits the contacts visible/editable; trash needs ``access deleted contacts``.
  ``fake.mint_jwt(api_key, ttl=300)`` returns a bearer JWT for that key's contact.
- Attributes: ``answer_delay`` (seconds every call waits, after running, before answering: a
  slow server), ``maintenance_mode`` (503), ``debug_enabled`` (skips the CSRF gate),
  ``store.trash_enabled`` (``contact_undelete``), ``store.trash_bumps_modified`` (6.7+).

Behaviour (section numbers of the reference): gates in order authx 401 (text/plain) → 503 →
CSRF 400 → GET-on-write 405 → unknown entity/action 500 → permission 403 → params 500 (§A.9);
``params`` form field (a JSON body is ignored, invalid JSON gives an HTML 500), GET query params
merged (6.10+), ``checkPermissions`` stripped, ``index``, multi-call ``calls``; envelope and
``count``/``countFetched``/``countMatched`` rules (§2.1); detailed/generic error bodies (§2.2);
select with wildcards, implicit FK and ``*_primary``/``*_billing`` joins, pseudoconstant
suffixes (``:name``, ``:label``, ``:abbr``), contact-type pruning (§3.3-3.4); every operator of §3.2
with MySQL NULL and case-insensitive semantics; ``groups``/``tags`` filters (IN/NOT IN only);
orderBy (no orderBy gives a scrambled order, like the real server), limit, offset, ``chain``;
trash hidden unless ``is_deleted`` is in ``where`` or the fetch is by id/external_identifier
(§3.5); ``modified_date`` in site-local time bumped by contact-row changes (only when a value
changes, as MySQL's ``ON UPDATE``), by any email/phone/address write (triggers), by trashing
(6.7+), and **not** by group or tag changes (§3.6); create/update/save (``records``,
``defaults``, ``match`` with its silent duplicate creation on 0 or 2+ matches, ``reload``) and
delete (``useTrash``) (§5); unique ``external_identifier`` (500 ``DB Error: already exists``);
``GroupContact`` statuses and ``SubscriptionHistory``; ``getMergedTo``/``getMergedFrom``.

Not implemented: explicit ``join``, ``groupBy``/``having`` (500 naming the gap), smart groups,
child groups, ``age_years``, relative date keywords, ``replace``, ``getDuplicates``, Log,
ACL deny rules, IM/Website.

Fault injection: ``fake.faults = Faults(rate=0.1, seed=1)`` (see ``faults.KINDS``) or rules such as
``FaultRule("500", nth=3)`` / ``FaultRule("429", entity="Contact", action="save", times=2)``;
``fake.faults = None`` stops all faults. ``fake.echo = Echo(500, "json")`` makes every API call
answer an error body echoing the request headers (credentials included; see ``faults.Echo``).
Every request is logged in ``fake.requests`` (dicts
with ``method``, ``path``, ``entity``, ``action``, ``params``, ``status``, ``fault``, ``flow``,
``duration``; no credentials). Test-side helpers mutate data with the real ``modified_date`` rules:
``add_contact``, ``update_contact``, ``trash``, ``restore``, ``hard_delete``, ``merge``,
``add_group``, ``set_membership``, ``remove_membership``, ``add_tag``, ``tag``, ``add_email``,
``contact``, ``freeze_time``/``advance``.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from connector_core.testing.server import LoopbackServer

from .faults import Echo, Faults
from .http import Handler
from .operators import ApiError
from .seed import seed_contacts
from .store import ALL_PERMISSIONS, ApiUser, Store
from .writes import create, trash, update, write_action

URL_STYLES = ("standalone", "drupal8", "drupal7", "wordpress", "joomla", "any")


class FakeCiviCRM(LoopbackServer):
    """A CiviCRM APIv4 endpoint on loopback; use as a context manager (or `start()`/`stop()`)."""

    def __init__(
        self,
        api_key: str = "fake-civicrm-api-key",
        site_key: str | None = None,
        url_style: str = "standalone",
        *,
        timezone: str = "UTC",
        version: tuple[int, int] = (6, 17),
        permissions: frozenset[str] = ALL_PERMISSIONS,
        custom_fields: dict[str, str] | None = None,
        faults: Faults | None = None,
    ) -> None:
        if url_style not in URL_STYLES:
            raise ValueError(f"url_style must be one of {URL_STYLES}")
        self.url_style = url_style
        self.site_key = site_key
        self.version = version
        self.store = Store(timezone=timezone, custom_fields=custom_fields)
        self.users: dict[str, ApiUser] = {}
        self.jwts: dict[str, tuple[ApiUser, float]] = {}
        self.faults = faults
        self.echo: Echo | None = None
        self.maintenance_mode = False
        self.debug_enabled = False
        self.authx_header_cred = True
        self.answer_delay = 0.0  # seconds every call waits, after it ran, before its answer
        self.requests: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._admin = ApiUser(contact_id=1, permissions=ALL_PERMISSIONS)
        super().__init__()
        self.api_key = api_key
        self.add_api_key(api_key, permissions=permissions)

    # ---- lifecycle (start, stop, port, base_url and `with` come from LoopbackServer) ----
    def handler_class(self) -> type[Handler]:
        """The request handler, bound to this fake."""
        return type("BoundHandler", (Handler,), {"fake": self})

    def api_url(self, entity: str = "", action: str = "") -> str:
        """The URL of an APIv4 call (or of the multi-call route) in this fake's CMS URL style."""
        route = "/".join(p for p in ("civicrm/ajax/api4", entity, action) if p)
        if self.url_style in ("drupal7",):
            return f"{self.base_url}/?q={route}"
        if self.url_style == "wordpress":
            return f"{self.base_url}/?civiwp=CiviCRM&q={route}"
        if self.url_style == "joomla":
            return f"{self.base_url}/administrator/index.php?option=com_civicrm&task={route}"
        return f"{self.base_url}/{route}"

    # ---- credentials -----------------------------------------------------------------------
    def add_api_key(
        self,
        key: str,
        *,
        contact_id: int | None = None,
        permissions: frozenset[str] | set[str] = ALL_PERMISSIONS,
        has_cms_user: bool = True,
        acl_contact_ids: set[int] | None = None,
    ) -> ApiUser:
        """Register an API key (at most 32 characters, as `civicrm_contact.api_key`)."""
        user = ApiUser(
            contact_id=contact_id or len(self.users) + 1,
            permissions=frozenset(permissions),
            has_cms_user=has_cms_user,
            acl_contact_ids=acl_contact_ids,
        )
        self.users[key[:32]] = user
        return user

    def mint_jwt(self, api_key: str | None = None, ttl: float = 300) -> str:
        user = self.users[(api_key or self.api_key)[:32]]

        def enc(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        token = ".".join(
            (
                enc({"alg": "HS256", "typ": "JWT"}),
                enc(
                    {
                        "sub": f"cid:{user.contact_id}",
                        "scope": "authx",
                        "exp": int(time.time() + ttl),
                    }
                ),
                secrets.token_urlsafe(16),
            )
        )
        self.jwts[token] = (user, time.time() + ttl)
        return token

    def _lookup(self, credential: str) -> tuple[ApiUser | None, bool, bool]:
        """(user, is_jwt, expired) for a bearer credential."""
        if credential in self.jwts:
            user, expiry = self.jwts[credential]
            return (None, True, True) if time.time() > expiry else (user, True, False)
        if credential.count(".") == 2 and len(credential) > 32:
            return None, True, False
        return self.users.get(credential) if len(credential) <= 32 else None, False, False

    def _reject(self, message: str) -> tuple[int, Any]:
        headers = (
            {"Set-Cookie": f"SESSCIVISO={secrets.token_hex(16)}; path=/; HttpOnly"}
            if self.url_style == "standalone"
            else {}
        )
        return 401, ("text/plain", f"HTTP 401 {message}".encode(), headers)

    # ---- instrumentation -------------------------------------------------------------------
    def _log(
        self, method: str, path: str, entity: str | None, action: str | None
    ) -> dict[str, Any]:
        path = path.split("?")[0] + (
            "?…" if "?" in path else ""
        )  # no query: it may hold _authx or api_key
        record: dict[str, Any] = {
            "method": method,
            "path": path,
            "entity": entity,
            "action": action,
            "params": None,
            "status": None,
            "fault": None,
            "flow": None,
            "duration": None,
        }
        with self._log_lock:
            self.requests.append(record)
        return record

    def count_requests(self, entity: str | None = None, action: str | None = None) -> int:
        return sum(
            1
            for r in list(self.requests)
            if entity in (None, r["entity"]) and action in (None, r["action"])
        )

    def clear_requests(self) -> None:
        with self._log_lock:
            self.requests.clear()

    # ---- clock -----------------------------------------------------------------------------
    def freeze_time(self, moment: datetime | str) -> None:
        """Pin the site-local clock used for created_date/modified_date."""
        self.store.frozen = datetime.fromisoformat(moment) if isinstance(moment, str) else moment

    def advance(self, seconds: float) -> None:
        base = self.store.frozen or datetime.fromisoformat(self.store.now())
        self.store.frozen = base + timedelta(seconds=seconds)

    def unfreeze_time(self) -> None:
        self.store.frozen = None

    # ---- test-side data helpers (all bypass HTTP, faults and permissions) -------------------
    def seed_contacts(self, n: int, rng: random.Random | None = None) -> list[int]:
        return seed_contacts(self.store, n, rng)

    def add_contact(self, **values: Any) -> int:
        """Create a contact; `email`/`phone` mean `email_primary.email`/`phone_primary.phone`."""
        for short, path in (("email", "email_primary.email"), ("phone", "phone_primary.phone")):
            if short in values:
                values[path] = values.pop(short)
        with self.store.lock:
            return int(create(self.store, self._admin, "Contact", values)["id"])

    def update_contact(self, contact_id: int, **values: Any) -> None:
        with self.store.lock:
            update(self.store, self._admin, "Contact", contact_id, values)

    def contact(self, contact_id: int) -> dict[str, Any] | None:
        with self.store.lock:
            row = self.store.tables["Contact"].get(contact_id)
            return dict(row) if row else None

    def trash(self, contact_id: int) -> None:
        with self.store.lock:
            trash(self.store, contact_id)

    def restore(self, contact_id: int) -> None:
        self.update_contact(contact_id, is_deleted=False)

    def hard_delete(self, contact_id: int) -> None:
        with self.store.lock:
            self.store.hard_delete_contact(contact_id)

    def merge(self, loser: int, survivor: int) -> None:
        """Merge `loser` into `survivor` as CiviCRM 6.17.2 did: the loser's group memberships
        (and their SubscriptionHistory rows) move to the survivor, whose ``modified_date``
        does NOT change; the loser is trashed (deleted if trash is off), which bumps its own."""
        with self.store.lock:
            self.store.merged_to[loser] = survivor
            self.store.move_memberships(loser, survivor)
            if self.store.trash_enabled:
                trash(self.store, loser)
            else:
                self.store.hard_delete_contact(loser)

    def add_group(self, name: str, title: str | None = None, **values: Any) -> int:
        with self.store.lock:
            row = create(
                self.store, self._admin, "Group", {"name": name, "title": title or name, **values}
            )
            return int(row["id"])

    def set_membership(self, contact_id: int, group_id: int, status: str = "Added") -> None:
        """Add or change static group membership; does not bump the contact's modified_date."""
        with self.store.lock:
            rid = self.store.pairs.get((group_id, contact_id))
            if rid is None:
                create(
                    self.store,
                    self._admin,
                    "GroupContact",
                    {"group_id": group_id, "contact_id": contact_id, "status": status},
                )
            else:
                update(self.store, self._admin, "GroupContact", rid, {"status": status})

    def remove_membership(self, contact_id: int, group_id: int) -> None:
        """Delete the GroupContact row outright (status history aside)."""
        with self.store.lock:
            write_action(
                self.store,
                self._admin,
                "GroupContact",
                "delete",
                {"where": [["group_id", "=", group_id], ["contact_id", "=", contact_id]]},
            )

    def add_tag(self, name: str, parent_id: int | None = None) -> int:
        with self.store.lock:
            return int(
                create(self.store, self._admin, "Tag", {"name": name, "parent_id": parent_id})["id"]
            )

    def tag(self, contact_id: int, tag_id: int) -> None:
        with self.store.lock:
            create(
                self.store, self._admin, "EntityTag", {"entity_id": contact_id, "tag_id": tag_id}
            )

    def add_email(self, contact_id: int, email: str, **values: Any) -> int:
        with self.store.lock:
            row = create(
                self.store,
                self._admin,
                "Email",
                {"contact_id": contact_id, "email": email, **values},
            )
            return int(row["id"])


__all__ = ["URL_STYLES", "ApiError", "FakeCiviCRM"]
