"""APIv4 over HTTP: URLs per CMS, authentication headers, the envelope, errors mapped once.

Every call is a POST whose action parameters travel JSON-encoded in the form field ``params``
(a JSON request body is silently ignored by CiviCRM: reference §1.3).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from urllib3.exceptions import ReadTimeoutError

from connector_civicrm.settings import CivicrmSettings
from connector_core.errors import AdapterError, AdapterUnavailable, AuthenticationFailed
from connector_core.http import (
    RETRY_STATUSES,
    http_errors,
    make_retry,
    make_session,
    server_text,
    write_error_text,
)

log = logging.getLogger("connector.civicrm")  # under "connector": `-v` shows it

ROUTE = "civicrm/ajax/api4"
_GENERIC_ERROR = "Sorry an error occurred"
_CSRF = "SECURITY ALERT"
_AUTH_HINT = (
    "Check the API key (or JWT) stored for this connection: an API key longer than 32 "
    "characters is silently truncated by CiviCRM, so set a shorter one. The authx extension "
    "must accept the 'xheader' flow (X-Civi-Auth), and a user without the 'authenticate with "
    "api key' permission must also send the site key (`site_key:`). A JWT may have expired."
)
_PERMISSION_HINT = (
    "Grant the API user's CMS role the permission CiviCRM names (for reading: 'access "
    "CiviCRM', 'view all contacts', 'access deleted contacts', and 'access all custom data' "
    "for custom fields; for writing also 'add contacts', 'edit all contacts', 'delete "
    "contacts' (trashing needs it too) and 'edit groups'); `connector doctor` names the "
    "missing one; see docs/adapters/civicrm.md."
)


#: A server that refuses connections is asked once more, not five times with backoff (a
#: site that was down took 18-19 s to be reported).
_CONNECT_RETRIES = 1
#: Reads are idempotent: a read that timed out or was cut off is asked again (twice).
_READ_RETRY = make_retry().new(connect=_CONNECT_RETRIES, read=2)
#: Writes are re-sent automatically only when the server certainly did not run them: the
#: connection was refused, or it answered 429 (rate limit) or 503 (maintenance). After a
#: read timeout, a cut-off answer or a gateway's 502/504 the caller looks up what happened
#: first (a real Contact.save answered after the timeout was POSTed six times).
_WRITE_RETRY = make_retry().new(
    connect=_CONNECT_RETRIES, read=0, status_forcelist=frozenset({429, 503})
)


class _Garbled(AdapterUnavailable):
    """The answer was cut off or is not JSON (a proxy page, a PHP fatal error)."""


class Unanswered(AdapterUnavailable):
    """A write was sent and no usable answer came back: CiviCRM may or may not have run it."""


class CivicrmApiError(AdapterError):
    """CiviCRM answered an API call with an error (HTTP 500 or a failed multi-call entry)."""

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


def endpoint(settings: CivicrmSettings, path: str) -> str:
    """The URL of a CiviCRM route (e.g. ``civicrm/ajax/api4/Contact/get``) in the CMS's form."""
    base = settings.base_url
    match settings.url_style:
        case "standalone" | "drupal":
            return f"{base}/{path}"
        case "drupal7":
            return f"{base}/?q={quote(path)}"
        case "wordpress":
            return f"{base}/?civiwp=CiviCRM&q={quote(path)}"
        case "wordpress-clean":
            rest = path.removeprefix("civicrm/")
            return f"{base}/{settings.wordpress_base_page.strip('/')}/{rest}/"
        case "joomla":
            return f"{base}/administrator/index.php?option=com_civicrm&task={quote(path)}"
    raise AssertionError(settings.url_style)  # pragma: no cover - the Literal is exhaustive


class CivicrmClient:
    """One CiviCRM site: ``call(entity, action, params)`` returns the response envelope."""

    def __init__(self, settings: CivicrmSettings, api_key: str, site_key: str | None, what: str):
        self.settings = settings
        self.what = what
        self.requests = 0  # HTTP requests sent (retries inside urllib3 not counted)
        self.where = f"{what} at {_shown(settings.base_url)}"  # transport errors name the URL
        self._session = self._open(_READ_RETRY)
        self._writes = self._open(_WRITE_RETRY)
        self._auth = {"X-Civi-Auth": f"Bearer {api_key}"}
        if site_key:
            self._auth["X-Civi-Key"] = site_key

    def __repr__(self) -> str:
        return f"<CivicrmClient {self.what}>"

    def _open(self, retry: Any) -> requests.Session:
        session = make_session("civicrm", verify=self.settings.verify, retry=retry)
        session.headers["X-Requested-With"] = "XMLHttpRequest"
        session.headers["Accept"] = "application/json"
        return session

    def close(self) -> None:
        """Close the HTTP sessions."""
        self._session.close()
        self._writes.close()

    def call(self, entity: str, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run one API call; return its envelope (``values``, ``count`` …)."""
        label = f"{entity}.{action}"
        path = f"{ROUTE}/{entity}/{action}"
        body = self._post_read(path, {"params": _dumps(params)}, label, retry=is_read(action))
        if not isinstance(body, dict) or "values" not in body:
            raise AdapterUnavailable(
                f"{self.what}: {label} answered without a 'values' list",
                hint="Is `url`/`url_style` pointing at CiviCRM's APIv4? The next run resumes.",
            )
        return body

    def call_many(
        self, calls: Mapping[str, tuple[str, str, Mapping[str, Any]]]
    ) -> dict[str, dict[str, Any] | CivicrmApiError]:
        """A multi-call (one request): each entry is an envelope or the error it raised."""
        payload = {k: [e, a, dict(p)] for k, (e, a, p) in calls.items()}
        reads = all(is_read(a) for _, a, _ in calls.values())
        body = self._post_read(ROUTE, {"calls": _dumps(payload)}, "multi-call", retry=reads)
        if not isinstance(body, dict):
            raise AdapterUnavailable(f"{self.what}: the multi-call answer is not an object")
        out: dict[str, dict[str, Any] | CivicrmApiError] = {}
        for key, (entity, action, _) in calls.items():
            item = body.get(key)
            if isinstance(item, dict) and "values" in item:
                out[key] = item
            else:
                out[key] = self._api_error(
                    item, 500, f"{entity}.{action}", write=not is_read(action)
                )
        return out

    # -- transport ------------------------------------------------------------------------

    def _post_read(self, path: str, form: dict[str, str], label: str, *, retry: bool) -> Any:
        """POST; a read whose answer arrives cut off or garbled is asked again (twice at most).

        A write is not: CiviCRM may have executed it, so it raises :class:`Unanswered` and
        the caller looks up what the server did before sending anything again.
        """
        attempts = 3 if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._post(path, form, label, write=not retry)
            except _Garbled as exc:
                if not retry:
                    raise Unanswered(str(exc), hint=exc.hint) from None
                if attempt == attempts:
                    raise
                log.info("%s: %s answered garbled; asking again", self.what, label)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, path: str, form: dict[str, str], label: str, *, write: bool) -> Any:
        url = endpoint(self.settings, path)
        self.requests += 1
        session = self._writes if write else self._session
        with http_errors(self.where, timeout_hint=_TIMEOUT_HINT):
            try:
                response = session.post(
                    url, data=form, headers=self._auth, timeout=self.settings.timeout
                )
                text = response.text
            except requests.exceptions.ChunkedEncodingError:
                raise _Garbled(
                    f"{self.what}: {label}: the connection closed in the middle of the answer",
                    hint="The next run resumes; check the server and any proxy in between.",
                ) from None
            except (requests.ReadTimeout, requests.ConnectionError) as exc:
                if not _read_timeout(exc):
                    raise
                kind = Unanswered if write else AdapterUnavailable
                raise kind(
                    f"{self.where}: {label}: the server did not answer within "
                    f"{self.settings.timeout:g} s",
                    hint=_TIMEOUT_HINT,
                ) from None
        log.debug("%s %s -> HTTP %s", self.what, label, response.status_code)
        if write and response.status_code in (502, 504):
            raise Unanswered(
                f"{self.where}: {label}: a gateway answered HTTP {response.status_code}; "
                "CiviCRM may have carried the call out",
                hint="The next run looks up what CiviCRM holds before writing again.",
            )
        return self._decode(response, text, label, write=write)

    def _decode(
        self, response: requests.Response, text: str, label: str, *, write: bool = False
    ) -> Any:
        status = response.status_code
        if status == 401:
            reason = server_text(text.strip().removeprefix("HTTP 401").strip()) or "refused"
            raise AuthenticationFailed(
                f"{self.what}: CiviCRM refused the credentials (HTTP 401: {reason})",
                hint=_AUTH_HINT,
            )
        if status in RETRY_STATUSES:
            raise AdapterUnavailable(
                f"{self.what}: {label}: the server stayed unavailable (HTTP {status}) "
                "after several retries",
                hint="The next run resumes from where this one stopped.",
            )
        try:
            body = json.loads(text)
        except ValueError:
            raise _Garbled(
                f"{self.what}: {label}: HTTP {status} with a body that is not complete JSON "
                f"({len(text)} bytes, {response.headers.get('Content-Type', 'no type')})",
                hint="A proxy error page, a PHP error or a cut-off answer; check `url` and "
                "`url_style` and the server's logs. The next run resumes.",
            ) from None
        if status == 200 and isinstance(body, dict) and body.get("is_error"):
            raise AuthenticationFailed(
                f"{self.what}: {label}: {server_text(str(body.get('error_message')))}",
                hint=_AUTH_HINT,
            )
        if status >= 400:
            raise self._api_error(body, status, label, write=write)
        return body

    def _api_error(
        self, body: Any, status: int, label: str, *, write: bool = False
    ) -> CivicrmApiError:
        """The error CiviCRM answered. For a write, its text is cut to a safe summary
        (:func:`~connector_core.http.write_error_text`): CiviCRM quotes the values it was
        sent (``'…' is not a valid option for field prefix_id``), and they are a person's."""
        message = ""
        if isinstance(body, dict):
            message = str(body.get("error_message") or body.get("status_message") or "")
            if isinstance(body.get("status"), int):
                status = body["status"]
        shown = write_error_text if write else server_text
        message = shown(message, 500) or "no error message"
        if status == 403:
            if _GENERIC_ERROR in message:
                message += " (the API user's permissions or ACLs refused it)"
            raise AuthenticationFailed(
                f"{self.what}: {label} was refused: {message}", hint=_PERMISSION_HINT
            )
        if status == 400 and _CSRF in message:
            return CivicrmApiError(
                f"{self.what}: {label}: {message}",
                status=status,
                hint="A proxy dropped the X-Civi-Auth and X-Requested-With headers; let them "
                "through to CiviCRM.",
            )
        if status == 404:
            return CivicrmApiError(
                f"{self.what}: {label}: the API route was not found (HTTP 404)",
                status=status,
                hint="Check `url` and `url_style` (standalone, drupal, drupal7, wordpress, "
                "wordpress-clean, joomla).",
            )
        hint = None
        if _GENERIC_ERROR in message:
            hint = (
                "CiviCRM hides details from users without 'view debug output'; look the "
                "Error ID up in CiviCRM's log, or grant that permission while debugging."
            )
        return CivicrmApiError(
            f"{self.what}: {label} failed (HTTP {status}): {message}", status=status, hint=hint
        )


_TIMEOUT_HINT = "Check the server, or raise `timeout:` (or lower `page_size:`) in the connection."


def is_read(action: str) -> bool:
    """Whether an APIv4 action only reads (safe to send again)."""
    return action.startswith("get") or action == "checkAccess"


def _read_timeout(exc: Exception) -> bool:
    """A read timeout, also when urllib3 gave up retrying it (requests then calls it a
    ConnectionError, which read "cannot connect" although the server was up)."""
    if isinstance(exc, requests.ReadTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, ReadTimeoutError)


def _shown(url: str) -> str:
    """The URL for messages: no user name or password, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
