"""A fake server's plumbing: an HTTP server on a free loopback port, in a daemon thread.

Fakes of remote tools (the CiviCRM APIv4, Nextcloud's OCS API) subclass
:class:`LoopbackServer` and implement :meth:`LoopbackServer.handler_class`; starting,
stopping, the port and the context-manager protocol are shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


def dispatching_handler(
    serve: Callable[[BaseHTTPRequestHandler], None], methods: Iterable[str]
) -> type[BaseHTTPRequestHandler]:
    """A quiet HTTP/1.1 handler class that passes every request of `methods` to `serve`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, as a real server's

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            serve(self)

    for method in methods:
        setattr(Handler, f"do_{method}", Handler._handle)
    return Handler


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request's body, as long as its Content-Length says (empty without one)."""
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def send_answer(
    handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
) -> None:
    """Answer with `status`, `headers` and `body` (its Content-Length set here)."""
    handler.send_response(status)
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


class LoopbackServer:
    """Serve :meth:`handler_class` on 127.0.0.1 at a free port while started."""

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class, usually bound to this server object."""
        raise NotImplementedError

    def start(self) -> Self:
        """Serve in a daemon thread; returns self."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def port(self) -> int:
        """The port served on."""
        if self._server is None:
            raise RuntimeError(f"the {type(self).__name__} is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
