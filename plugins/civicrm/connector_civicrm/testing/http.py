"""The fake's HTTP layer: routes per CMS URL style, authx, gates, envelope and errors (§1, §2)."""

from __future__ import annotations

import contextlib
import json
import secrets
import string
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from .faults import EXECUTED
from .operators import ApiError
from .store import ACTION_PARAMS, ANONYMOUS, ApiUser, Result

if TYPE_CHECKING:
    from .fake import FakeCiviCRM

ROUTE = "civicrm/ajax/api4"
CSRF = "SECURITY ALERT: Ajax requests can only be issued by javascript clients, eg. CRM.api4()."
NOT_POST = "SECURITY: All requests that modify the database must be http POST, not GET."
HTML_500 = (
    b"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Internal Server Error</h1>"
    b"<p>TypeError: json_decode(): Argument #1 must be of type string</p></body></html>"
)


def error_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(3))


def route_for(style: str, path: str, query: dict[str, str]) -> tuple[str | None, str | None]:
    """(CiviCRM route, redirect location) for a request under `style`; (None, None) is a 404."""
    path = path.rstrip("/") or "/"
    q = query.get("q")
    path_route = path.lstrip("/") if path.lstrip("/").startswith(ROUTE) else None
    if style == "any":
        return path_route or q or query.get("task"), None
    if style in ("standalone", "drupal8"):
        return path_route, None
    if style == "drupal7":
        return path_route or (q if path in ("/", "/index.php") else None), None
    if style == "joomla":
        if path == "/administrator/index.php" and query.get("option") == "com_civicrm":
            return query.get("task"), None
        return None, None
    if style == "wordpress":
        if path == "/wp-admin/admin.php" and query.get("page") == "CiviCRM":
            return None, "/wp-login.php?" + urlencode({"redirect_to": "/wp-admin/admin.php"})
        if q and path in ("/", "/index.php"):
            if query.get("civiwp") == "CiviCRM":
                return q, None
            if (
                query.get("page") == "CiviCRM"
            ):  # the plugin 301-redirects page= to civiwp= on the front end
                return None, "/?" + urlencode(
                    {**{k: v for k, v in query.items() if k != "page"}, "civiwp": "CiviCRM"}
                )
        return path_route, None  # clean URLs with the default `civicrm` base page
    raise ValueError(f"unknown url_style {style!r}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, as a real server's
    fake: FakeCiviCRM  # set on a subclass per server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_api("GET")

    def do_POST(self) -> None:
        self.handle_api("POST")

    def do_OPTIONS(self) -> None:
        self.send(200, b"", "text/plain")

    # ---- plumbing --------------------------------------------------------------------------
    def send(
        self,
        status: int,
        body: bytes,
        ctype: str,
        headers: dict[str, str] | None = None,
        truncate: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        self.wfile.flush()

    def send_json(self, status: int, payload: Any, fault: str | None = None) -> None:
        ctype = (
            "application/json; charset=UTF-8"
            if self.fake.url_style == "wordpress"
            else "application/json"
        )
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        if fault == "truncated_json":
            body = body[: len(body) // 2]
        self.send(status, body, ctype, truncate=fault == "truncated")

    def handle_api(self, method: str) -> None:
        fake = self.fake
        started = time.perf_counter()
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form = (
            {
                k: v[-1]
                for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()
            }
            if method == "POST" and ctype == "application/x-www-form-urlencoded"
            else {}
        )
        fields = {**query, **form} if method == "POST" else query
        route, redirect = route_for(fake.url_style, url.path, query)
        entity = action = None
        if route is not None and route.rstrip("/").startswith(ROUTE):
            rest = route.rstrip("/")[len(ROUTE) :].strip("/").split("/")
            if rest != [""]:
                entity, action = rest[0], (rest[1] if len(rest) > 1 else None)
        record = fake._log(method, self.path, entity, action)
        if redirect is not None:
            return self._finish(
                record,
                301 if "civiwp" in redirect else 302,
                started,
                lambda: self.send(record["status"], b"", "text/html", {"Location": redirect}),
            )
        if route is None or not route.rstrip("/").startswith(ROUTE):
            return self._finish(
                record,
                404,
                started,
                lambda: self.send(404, b"<h1>Page not found</h1>", "text/html"),
            )
        if fake.echo is not None and fake.echo.matches(entity, action):
            return self._echo(record, started)
        fault = fake.faults.draw(entity, action) if fake.faults is not None else None
        record["fault"] = fault
        if fault is not None and fault not in EXECUTED:
            return self._fault(record, fault, started)
        status, payload = self._execute(method, fields, query, entity, action, record)
        # A slow server has done the work by the time it answers late: the client that gave
        # up waiting must not assume it did not happen (seen on a real CiviCRM).
        slow = fake.faults.slow_delay if fault == "slow" and fake.faults else 0.0
        late = fake.answer_delay + slow
        if late:
            time.sleep(late)
        if isinstance(payload, tuple):  # a non-JSON answer: (content type, body, headers)
            return self._finish(
                record,
                status,
                started,
                lambda: self.send(status, payload[1], payload[0], payload[2]),
            )
        self._finish(record, status, started, lambda: self.send_json(status, payload, fault))

    def _finish(self, record: dict[str, Any], status: int, started: float, write: Any) -> None:
        record["status"] = status
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            write()
        record["duration"] = time.perf_counter() - started

    def _fault(self, record: dict[str, Any], fault: str, started: float) -> None:
        faults = self.fake.faults
        assert faults is not None
        if fault == "timeout":
            time.sleep(faults.timeout_delay)
            record["status"] = None
            self.close_connection = True
            return
        if fault == "429":
            body = json.dumps({"error_message": "Too Many Requests"}).encode()
            return self._finish(
                record,
                429,
                started,
                lambda: self.send(
                    429, body, "application/json", {"Retry-After": str(faults.retry_after)}
                ),
            )
        status = 200 if fault == "html" else int(fault)
        reason = self.responses.get(status, ("Error",))[0]
        page = f"<html><body><h1>{status} {reason}</h1></body></html>".encode()
        self._finish(
            record, status, started, lambda: self.send(status, page, "text/html; charset=UTF-8")
        )

    def _echo(self, record: dict[str, Any], started: float) -> None:
        echo = self.fake.echo
        assert echo is not None
        text = echo.text(dict(self.headers.items()))
        if echo.status == 401:
            body, ctype = f"HTTP 401 {text}".encode(), "text/plain"
        else:
            payload = {"error_code": 0, "error_message": text, "status": 500}
            body, ctype = json.dumps(payload, ensure_ascii=False).encode(), "application/json"
        status = echo.status
        self._finish(record, status, started, lambda: self.send(status, body, ctype))

    # ---- the CiviCRM side ------------------------------------------------------------------
    def _execute(
        self,
        method: str,
        fields: dict[str, str],
        query: dict[str, str],
        entity: str | None,
        action: str | None,
        record: dict[str, Any],
    ) -> tuple[int, Any]:
        fake = self.fake
        user, flow, failure = self._authenticate(method, fields, query)
        record["flow"] = flow
        if failure is not None:
            return failure
        if fake.maintenance_mode and entity != "User":
            return 503, {
                "status_code": 503,
                "status_message": "Temporarily unavailable for maintenance.",
            }
        xrw = self.headers.get("X-Requested-With") == "XMLHttpRequest"
        if not (xrw or flow in ("xheader", "param", "legacyrest") or fake.debug_enabled):
            return 400, {"error_code": 400, "error_message": CSRF}
        multi = entity is None
        if (multi and method != "POST") or (
            not multi
            and method != "POST"
            and not (action or "").lower().startswith("get")
            and action != "autocomplete"
        ):
            return 405, {"error_code": 405, "error_message": NOT_POST}
        if multi:
            return self._multi(user, fields.get("calls") or "[]")
        assert action is not None
        try:
            params = json.loads(fields["params"]) if fields.get("params") else {}
        except json.JSONDecodeError:
            return 500, ("text/html; charset=UTF-8", HTML_500, {})  # observed: a PHP TypeError page
        if not isinstance(params, dict):
            params = {}
        if method == "GET":  # 6.10+: declared action params in the query string
            for key, value in query.items():
                if key in ACTION_PARAMS.get(action, ()) and key not in params:
                    try:
                        params[key] = json.loads(value)
                    except json.JSONDecodeError:
                        params[key] = value
        record["params"] = params
        return self._call(user, entity or "", action, params, fields.get("index"))

    def _call(
        self, user: ApiUser, entity: str, action: str, params: dict[str, Any], index: Any
    ) -> tuple[int, Any]:
        try:
            result = self.fake.store.run(user, entity, action, params)
        except ApiError as exc:
            return exc.status, self._error(user, exc)
        return 200, envelope(entity, action, result, index)

    def _error(self, user: ApiUser, exc: ApiError) -> dict[str, Any]:
        eid = error_id()
        if user.detailed_errors:
            body: dict[str, Any] = {"error_id": eid} if self.fake.version >= (6, 9) else {}
            body.update(error_code=0, error_message=exc.message, status=exc.status)
            return body
        message = f"Sorry an error occurred and your request was not completed. (Error ID: {eid})"
        return {"error_code": "1", "error_message": message, "status": exc.status}

    def _multi(self, user: ApiUser, calls_json: str) -> tuple[int, Any]:
        try:
            calls = json.loads(calls_json)
        except json.JSONDecodeError:
            return 500, ("text/html; charset=UTF-8", HTML_500, {})
        items = calls.items() if isinstance(calls, dict) else enumerate(calls)
        out: dict[Any, Any] = {}
        statuses = []
        for key, call in items:
            entity, action = call[0], call[1]
            params = call[2] if len(call) > 2 and isinstance(call[2], dict) else {}
            status, payload = self._call(
                user, entity, action, params, call[3] if len(call) > 3 else None
            )
            statuses.append(status)
            out[key] = payload
        status = 200 if not statuses or 200 in statuses else statuses[0]
        return status, (out if isinstance(calls, dict) else list(out.values()))

    def _authenticate(
        self, method: str, fields: dict[str, str], query: dict[str, str]
    ) -> tuple[ApiUser, str | None, tuple[int, Any] | None]:
        fake = self.fake
        site_key = self.headers.get("X-Civi-Key") or fields.get("_authxSiteKey")
        params = query if method == "GET" else fields
        flow: str | None
        if self.headers.get("X-Civi-Auth") is not None:
            flow, cred = "xheader", self.headers["X-Civi-Auth"]
        elif self.headers.get("Authorization") is not None and fake.authx_header_cred:
            flow, cred = "header", self.headers["Authorization"]
            if cred.split(" ")[0].lower() in ("basic", "digest") and fake.version >= (6, 14):
                return ANONYMOUS, None, None  # 6.14+: a stray Basic/Digest header is ignored
        elif "_authx" in params:
            flow, cred = "param", params["_authx"]
        elif "api_key" in fields or "key" in fields:
            return self._legacy(fields)
        else:
            return ANONYMOUS, None, None
        scheme, _, value = cred.strip().partition(" ")
        if scheme.lower() == "basic":
            return (
                ANONYMOUS,
                flow,
                fake._reject(
                    f'Authentication type "pass" with flow "{flow}" '
                    "is not allowed for this principal."
                ),
            )
        if scheme.lower() != "bearer":
            return ANONYMOUS, flow, fake._reject("Invalid credential")
        user, jwt, expired = fake._lookup(value)
        if expired:
            return ANONYMOUS, flow, fake._reject("Expired token")
        if user is None:
            return ANONYMOUS, flow, fake._reject("Invalid credential")
        guard_ok = (
            jwt
            or "authenticate with api key" in user.permissions
            or (fake.site_key is not None and site_key == fake.site_key)
        )
        if not guard_ok:
            return (
                ANONYMOUS,
                flow,
                fake._reject("Login not permitted. Must satisfy guard (site_key, perm)."),
            )
        return user, flow, None

    def _legacy(self, fields: dict[str, str]) -> tuple[ApiUser, str | None, tuple[int, Any] | None]:
        fake = self.fake

        def reject(reason: str) -> tuple[ApiUser, str, tuple[int, Any]]:
            body = json.dumps({"error_message": f"FATAL: {reason}", "is_error": 1}).encode()
            return ANONYMOUS, "legacyrest", (200, ("text/javascript", body, {}))

        user, jwt, _expired = fake._lookup(fields.get("api_key") or "")
        if user is None:
            return reject("Invalid credential")
        if not (
            jwt
            or "authenticate with api key" in user.permissions
            or fields.get("key") == fake.site_key
        ):
            return reject("Login not permitted. Must satisfy guard (site_key, perm).")
        if not user.has_cms_user:
            return reject("Cannot login. No matching user is available.")
        return user, "legacyrest", None


def envelope(entity: str, action: str, result: Result, index: Any = None) -> dict[str, Any]:
    """The APIv4 AJAX body, in CiviCRM's key order (§2.1)."""
    values: Any = result.values
    if index not in (None, ""):
        with contextlib.suppress(json.JSONDecodeError):
            index = json.loads(index) if isinstance(index, str) else index
        if isinstance(index, int):
            values = values[index] if -len(values) <= index < len(values) else None
        else:
            values = {str(v.get(index)): v for v in values if isinstance(v, dict)}
    body: dict[str, Any] = {
        "values": values,
        "entity": entity,
        "action": action,
        "debug": None,
        "version": 4,
        "count": result.count,
        "countFetched": result.count_fetched,
    }
    if result.count_matched is not None:
        body["countMatched"] = result.count_matched
    return body
