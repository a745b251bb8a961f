"""A small client of Nextcloud's OCS shares API: share a folder with a group, idempotently.

Every request carries ``OCS-APIRequest: true`` (without it Nextcloud answers 412 "CSRF check
failed") and asks for JSON (``Accept: application/json`` and ``format=json``). Answers are an
envelope ``{"ocs": {"meta": {"status", "statuscode", "message"}, "data": ...}}``. The v2
endpoint (used by default) maps errors to HTTP status codes and reports success as
statuscode 200; the v1 endpoint answers HTTP 200 for everything and reports success as
statuscode 100, errors only in ``meta.statuscode``. Both are understood, so the outcome is
taken from the envelope whichever endpoint answered.

Error mapping: 401 (or statuscode 997, OCS's "unauthorised") → AuthenticationFailed with the
app-password hint, never retried; 403 → the user may not share this (sharing or group
sharing disabled, or already shared by someone else); 404 → the path or the group does not
exist (an address-book path is not a file, so it is a 404 too); 412 → the CSRF header was
missing (a bug); 429/5xx and statuscode 996 → AdapterUnavailable (the next run retries).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import requests

from connector_core.errors import AdapterError, AdapterUnavailable, AuthenticationFailed
from connector_core.http import http_errors, raise_for_auth, server_text

__all__ = ["GROUP", "PERMISSION_READ", "OcsClient", "OcsError", "Share"]

GROUP = 1  #: shareType of a share with a group
PERMISSION_READ = 1  #: permissions bit for read-only
SHARES = "apps/files_sharing/api/v1/shares"
_OK = frozenset({100, 200})
_AUTH_HINT = (
    "Create an app password in Nextcloud (Settings → Security → Devices & sessions) and store "
    "it in the keyring; do not retry with the login password (Nextcloud throttles failures)."
)


class OcsError(AdapterError):
    """An OCS call failed; ``statuscode`` is the envelope's code (or the HTTP status)."""

    def __init__(self, message: str, *, statuscode: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.statuscode = statuscode


@dataclasses.dataclass(frozen=True, slots=True)
class Share:
    """One share as the API lists it (the fields this client uses)."""

    id: str
    share_type: int
    share_with: str | None
    path: str
    permissions: int
    created: bool = False  # True when this client just created it

    @classmethod
    def from_ocs(cls, data: dict[str, Any], *, created: bool = False) -> Share:
        """Build from one entry of the API's ``data``."""
        return cls(
            id=str(data.get("id", "")),
            share_type=int(data.get("share_type", -1)),
            share_with=data.get("share_with"),
            path=str(data.get("path", "")),
            permissions=int(data.get("permissions", 0)),
            created=created,
        )


class OcsClient:
    """The OCS shares API of one Nextcloud, through an authenticated session.

    Args:
        base_url: the Nextcloud base URL (``https://cloud.example.org``).
        session: a session from :func:`connector_core.http.make_session` with ``auth`` set.
        what: names the connection in messages.
        version: 2 (HTTP status codes) or 1 (always 200, code in the body).
    """

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        *,
        what: str = "nextcloud",
        timeout: float = 60.0,
        version: int = 2,
    ) -> None:
        if version not in (1, 2):
            raise ValueError("OCS versions are 1 and 2")
        self.base = f"{base_url.rstrip('/')}/ocs/v{version}.php/"
        self.session = session
        self.what = what
        self.timeout = timeout

    # -- the API ---------------------------------------------------------------------------

    def shares(self, path: str) -> list[Share]:
        """The shares of `path` (``/Folder/Sub``), including those made by other people."""
        data = self._call("GET", SHARES, params={"path": path, "reshares": "true"})
        return [Share.from_ocs(item) for item in data or [] if isinstance(item, dict)]

    def create_share(self, path: str, group: str, permissions: int) -> Share:
        """Share `path` with `group`; the server refuses a duplicate."""
        data = self._call(
            "POST",
            SHARES,
            data={
                "path": path,
                "shareType": str(GROUP),
                "shareWith": group,
                "permissions": str(permissions),
            },
        )
        return Share.from_ocs(data if isinstance(data, dict) else {}, created=True)

    def update_permissions(self, share_id: str, permissions: int) -> Share:
        """Change a share's permissions."""
        data = self._call("PUT", f"{SHARES}/{share_id}", data={"permissions": str(permissions)})
        return Share.from_ocs(data if isinstance(data, dict) else {})

    def ensure_group_share(
        self, path: str, group: str, *, permissions: int = PERMISSION_READ
    ) -> Share:
        """Make sure `path` is shared with `group` with exactly `permissions`.

        Lists the path's shares first, so a second run sends no POST; an existing share
        with other permissions is set back to the configured ones.
        """
        for share in self.shares(path):
            if share.share_type == GROUP and share.share_with == group:
                if share.permissions != permissions:
                    return self.update_permissions(share.id, permissions)
                return share
        return self.create_share(path, group, permissions)

    # -- plumbing --------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> Any:
        headers = {"OCS-APIRequest": "true", "Accept": "application/json"}
        with http_errors(self.what):
            response = self.session.request(
                method,
                self.base + endpoint,
                params={**(params or {}), "format": "json"},
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        doing = f"OCS {method} {endpoint}"
        if response.status_code == 401:
            raise_for_auth(response, f"{self.what}: {doing}", hint=_AUTH_HINT)
        meta, payload = self._envelope(response, doing)
        code = _int(meta.get("statuscode"), response.status_code)
        if response.status_code < 400 and code in _OK:
            return payload
        if code in _OK:  # an HTTP error without an OCS error code
            code = response.status_code
        raise self._error(code, response.status_code, str(meta.get("message") or ""), doing)

    def _envelope(self, response: requests.Response, doing: str) -> tuple[dict[str, Any], Any]:
        try:
            body = json.loads(response.content)
            ocs = body["ocs"]
            meta = ocs["meta"]
            if not isinstance(meta, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            if response.status_code == 412:
                raise OcsError(
                    f"{self.what}: {doing} was refused (HTTP 412, CSRF check failed)",
                    statuscode=412,
                    hint="The OCS-APIRequest: true header was lost (a proxy may strip it).",
                ) from None
            raise self._error(
                response.status_code, response.status_code, "the answer is not OCS JSON", doing
            ) from None
        return meta, ocs.get("data")

    def _error(self, code: int, http_status: int, message: str, doing: str) -> AdapterError:
        text = f"{self.what}: {doing} failed (OCS {code}, HTTP {http_status})"
        if message:
            text += f": {server_text(message)}"
        if code in (401, 997):
            return AuthenticationFailed(text, hint=_AUTH_HINT)
        if code == 403:
            return OcsError(
                text,
                statuscode=code,
                hint="The user may not share this folder with that group: check Settings → "
                "Sharing (group sharing, 'restrict to own groups') and who owns the folder.",
            )
        if code == 404:
            return OcsError(
                text,
                statuscode=code,
                hint="Check that the folder exists for this user and that the group exists "
                "(share_with_group is the group's id, not its display name).",
            )
        if code in (429, 996) or code >= 500 or http_status >= 500:
            return AdapterUnavailable(
                text, hint="The server is busy or failing; the next run retries."
            )
        return OcsError(text, statuscode=code)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
