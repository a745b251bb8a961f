"""A real WebDAV server for tests: WsgiDAV on cheroot, on a free loopback port.

WsgiDAV serves a temporary folder through its filesystem provider, optionally behind HTTP
Basic authentication, and every request is recorded (method, path, a few headers) so a test
can assert what the client did on the wire — for example that no PUT ever targeted the final
name of an export. ``slow_put`` throttles request bodies of PUTs, so a test can observe the
server while an upload is in flight::

    with WebDavServer(tmp_path, user="alice", password="secret") as server:
        url = server.url + "exports/"          # http://127.0.0.1:PORT/exports/

WsgiDAV and cheroot are test dependencies (the project's dev group), imported lazily.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote

_RECORDED_HEADERS = ("HTTP_DESTINATION", "HTTP_OVERWRITE", "HTTP_IF", "HTTP_IF_MATCH")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request the server received (the path is unquoted)."""

    method: str
    path: str
    headers: dict[str, str]
    started: float


class _SlowInput:
    """A wsgi.input that sleeps before each read, to stretch an upload over time."""

    def __init__(self, inner: Any, delay: float) -> None:
        self._inner = inner
        self._delay = delay

    def read(self, size: int = -1) -> bytes:
        time.sleep(self._delay)
        data: bytes = self._inner.read(size if size is None or size < 0 else min(size, 65536))
        return data

    def readline(self, size: int = -1) -> bytes:
        line: bytes = self._inner.readline(size)
        return line


class WebDavServer:
    """WsgiDAV serving `root` on ``127.0.0.1`` at a free port, in a background thread.

    Args:
        root: the folder served at ``/``.
        user, password: require HTTP Basic with these credentials; None for anonymous access.
        slow_put: seconds to sleep before each (at most 64 KiB) read of a PUT body.
    """

    def __init__(
        self,
        root: Path,
        *,
        user: str | None = None,
        password: str | None = None,
        slow_put: float = 0.0,
    ) -> None:
        self.root = Path(root)
        self.user = user
        self.password = password
        self.slow_put = slow_put
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The server's root URL, with a trailing slash."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> Self:
        """Start serving; returns when the port is bound."""
        from cheroot import wsgi
        from wsgidav.wsgidav_app import WsgiDAVApp  # type: ignore[import-untyped]

        self.root.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            users: dict[str, Any] = {"*": {self.user: {"password": self.password or ""}}}
        else:
            users = {"*": True}
        config = {
            "host": "127.0.0.1",
            "port": 0,
            "provider_mapping": {"/": str(self.root)},
            "simple_dc": {"user_mapping": users},
            "http_authenticator": {
                "domain_controller": None,  # the simple domain controller above
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
                "trusted_auth_header": None,
            },
            "verbose": 0,
            "logging": {"enable": False, "enable_loggers": []},
            "property_manager": True,
            "lock_storage": True,
            "dir_browser": {"enable": False},
        }
        app = WsgiDAVApp(config)
        self._server = wsgi.Server(("127.0.0.1", 0), self._logging(app), numthreads=8)
        self._server.prepare()
        self.port = int(self._server.bind_addr[1])
        self._thread = threading.Thread(
            target=self._server.serve, name=f"wsgidav-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _logging(self, app: WsgiApp) -> WsgiApp:
        def logged(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            method = environ.get("REQUEST_METHOD", "")
            headers = {
                name[5:].replace("_", "-").title(): environ[name]
                for name in _RECORDED_HEADERS
                if name in environ
            }
            entry = LoggedRequest(
                method, unquote(environ.get("PATH_INFO", "")), headers, time.monotonic()
            )
            with self._lock:
                self.requests.append(entry)
            if method == "PUT" and self.slow_put:
                environ["wsgi.input"] = _SlowInput(environ["wsgi.input"], self.slow_put)
            return app(environ, start_response)

        return logged

    def requests_made(self, method: str | None = None) -> list[LoggedRequest]:
        """The requests received so far, optionally only those of one method."""
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
