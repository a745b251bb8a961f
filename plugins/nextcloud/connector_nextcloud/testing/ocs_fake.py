"""A fake of Nextcloud's OCS shares API, written from ``../shared/reference/nextcloud-dav.md``.

What it implements, as the reference describes a real Nextcloud:

* ``/ocs/v1.php/...`` and ``/ocs/v2.php/...``; a request without ``OCS-APIRequest: true``
  gets HTTP 412 ``{"message": "CSRF check failed"}``;
* JSON when the request has ``Accept: application/json`` or ``format=json``, else XML;
* the envelope ``{"ocs": {"meta": {"status", "statuscode", "message"}, "data": ...}}``: v2
  maps errors to HTTP status codes (success: statuscode 200), v1 always answers HTTP 200 with
  the code in the body (success: statuscode 100);
* HTTP Basic; wrong credentials → 401 with ``WWW-Authenticate: Basic realm="Nextcloud"``;
* ``apps/files_sharing/api/v1/shares``: GET (``path``, ``reshares``), POST (``path``,
  ``shareType``, ``shareWith``, ``permissions``), PUT ``shares/{id}`` (``permissions``) and
  DELETE ``shares/{id}``. Only files and folders can be shared (shareType 1 = group,
  permissions 1 = read); an unknown path — an address-book path included — is a 404, so is
  an unknown group.

Details the reference does not state are modelled on Nextcloud's behaviour and marked here:
a second share of the same path with the same group is refused with 403, and a share's
fields are a subset of the real ones (``id`` as a string, ``share_type``, ``share_with``,
``path``, ``permissions``, ``item_type``, ``uid_owner``).

Every request is recorded in :attr:`OcsFake.requests`; :attr:`OcsFake.fail_next` injects one
answer with a given HTTP status (e.g. 503) for fault tests.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from connector_core.testing.server import LoopbackServer, dispatching_handler

SHARES = "apps/files_sharing/api/v1/shares"
_MESSAGES = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}


@dataclasses.dataclass(frozen=True, slots=True)
class OcsRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


class _Answer(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class OcsFake(LoopbackServer):
    """The fake server; use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        users: login → app password.
        groups: group ids that exist.
        paths: login → folder paths that exist for that user (``/Shared/North``).
    """

    def __init__(
        self,
        users: dict[str, str],
        groups: Iterable[str] = (),
        paths: dict[str, Iterable[str]] | None = None,
    ) -> None:
        super().__init__()
        self.users = dict(users)
        self.groups = set(groups)
        self.paths = {u: {_norm(p) for p in ps} for u, ps in (paths or {}).items()}
        self.shares: list[dict[str, Any]] = []
        self.requests: list[OcsRequest] = []
        self.fail_next: list[int] = []
        self._lock = threading.Lock()
        self._next_id = 1

    @property
    def url(self) -> str:
        """The base URL (what a client is configured with as Nextcloud's ``url``)."""
        return self.base_url

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """A handler that passes every request to :meth:`_serve`."""
        return dispatching_handler(self._serve, ("GET", "POST", "PUT", "DELETE"))

    def requests_to(self, method: str) -> list[OcsRequest]:
        """The recorded requests of one method."""
        with self._lock:
            return [r for r in self.requests if r.method == method]

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        form = _form(raw, handler.headers.get("Content-Type", ""))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        path = unquote(parts.path)
        with self._lock:
            self.requests.append(OcsRequest(handler.command, path, query, form, headers))
            injected = self.fail_next.pop(0) if self.fail_next else None

        if path.startswith("/ocs/v1.php/"):
            version, endpoint = 1, path[len("/ocs/v1.php/") :]
        elif path.startswith("/ocs/v2.php/"):
            version, endpoint = 2, path[len("/ocs/v2.php/") :]
        else:
            return _send(handler, 404, b"Not Found", "text/plain")
        if headers.get("ocs-apirequest", "").lower() != "true":
            body = json.dumps({"message": "CSRF check failed"}).encode()
            return _send(handler, 412, body, "application/json")
        as_json = "application/json" in headers.get("accept", "") or query.get("format") == "json"
        user = self._login(headers.get("authorization", ""))
        if user is None:
            return self._reply(
                handler,
                version,
                as_json,
                401,
                "Current user is not logged in",
                None,
                extra={"WWW-Authenticate": 'Basic realm="Nextcloud"'},
                http_status=401,
            )
        if injected is not None:
            return self._reply(handler, version, as_json, injected, "injected", None)
        try:
            data = self._route(user, handler.command, endpoint.rstrip("/"), query, form)
        except _Answer as answer:
            return self._reply(handler, version, as_json, answer.code, answer.message, None)
        self._reply(handler, version, as_json, 200, "OK", data)

    def _login(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(token).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password and password else None

    def _route(
        self, user: str, method: str, endpoint: str, query: dict[str, str], form: dict[str, str]
    ) -> Any:
        if endpoint == SHARES and method == "GET":
            return self._list(user, query)
        if endpoint == SHARES and method == "POST":
            return self._create(user, form)
        if endpoint.startswith(SHARES + "/"):
            share = self._find(user, endpoint[len(SHARES) + 1 :])
            if method == "PUT":
                if "permissions" in form:
                    share["permissions"] = _as_int(form["permissions"])
                return dict(share)
            if method == "DELETE":
                with self._lock:
                    self.shares.remove(share)
                return []
        raise _Answer(404, "Invalid query, please check the syntax. API specifications are here")

    def _list(self, user: str, query: dict[str, str]) -> list[dict[str, Any]]:
        if "path" in query:
            path = _norm(query["path"])
            if path not in self.paths.get(user, set()):
                raise _Answer(404, "Wrong path, file/folder does not exist")
            with self._lock:
                return [dict(s) for s in self.shares if s["path"] == path]
        with self._lock:
            return [dict(s) for s in self.shares if s["uid_owner"] == user]

    def _create(self, user: str, form: dict[str, str]) -> dict[str, Any]:
        path = _norm(form.get("path", ""))
        if not form.get("path"):
            raise _Answer(404, "Please specify a file or folder path")
        if path not in self.paths.get(user, set()):
            raise _Answer(404, "Wrong path, file/folder does not exist")
        share_type = _as_int(form.get("shareType", ""))
        if share_type != 1:
            raise _Answer(400, "Unknown share type")  # the fake models group shares only
        group = form.get("shareWith", "")
        if group not in self.groups:
            raise _Answer(404, "Please specify a valid group")
        permissions = _as_int(form.get("permissions", "31") or "31")
        with self._lock:
            if any(s["path"] == path and s["share_with"] == group for s in self.shares):
                raise _Answer(403, f"Path is already shared with group {group}")
            share = {
                "id": str(self._next_id),
                "share_type": 1,
                "share_with": group,
                "share_with_displayname": group,
                "path": path,
                "item_type": "folder",
                "permissions": permissions,
                "uid_owner": user,
            }
            self._next_id += 1
            self.shares.append(share)
            return dict(share)

    def _find(self, user: str, share_id: str) -> dict[str, Any]:
        with self._lock:
            for share in self.shares:
                if share["id"] == share_id and share["uid_owner"] == user:
                    return share
        raise _Answer(404, "Wrong share ID, share does not exist")

    def _reply(
        self,
        handler: BaseHTTPRequestHandler,
        version: int,
        as_json: bool,
        code: int,
        message: str,
        data: Any,
        *,
        extra: dict[str, str] | None = None,
        http_status: int | None = None,
    ) -> None:
        ok = code == 200
        statuscode = (100 if version == 1 else 200) if ok else code
        meta = {
            "status": "ok" if ok else "failure",
            "statuscode": statuscode,
            "message": message if not ok else "OK",
        }
        if http_status is None:
            http_status = 200 if version == 1 else code
        if as_json:
            envelope = {"ocs": {"meta": meta, "data": data if data is not None else []}}
            body, kind = json.dumps(envelope).encode(), "application/json; charset=utf-8"
        else:
            body, kind = _xml(meta, data), "application/xml; charset=utf-8"
        _send(handler, http_status, body, kind, extra)


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    kind: str,
    extra: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (extra or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _form(raw: bytes, content_type: str) -> dict[str, str]:
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        loaded = json.loads(raw)
        return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    return {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}


def _norm(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p)


def _as_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Answer(400, "Wrong or no update parameter given") from None


def _xml(meta: dict[str, Any], data: Any) -> bytes:
    def element(name: str, value: Any) -> str:
        if isinstance(value, dict):
            inner = "".join(element(k, v) for k, v in value.items())
        elif isinstance(value, list):
            inner = "".join(element("element", v) for v in value)
        else:
            inner = escape("" if value is None else str(value))
        return f"<{name}>{inner}</{name}>"

    text = '<?xml version="1.0"?>\n<ocs>' + element("meta", meta) + element("data", data or [])
    return (text + "</ocs>").encode()
