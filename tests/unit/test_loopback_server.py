"""The loopback server base that the fake CiviCRM and the fake OCS API share."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest
import requests

from connector_core.testing.server import LoopbackServer


class Hello(LoopbackServer):
    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"hello"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def test_serves_on_loopback_and_stops() -> None:
    with Hello() as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert requests.get(server.base_url, timeout=5).text == "hello"
        url = server.base_url
    with pytest.raises(RuntimeError, match="is not running"):
        _ = server.port
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)
    server.stop()  # idempotent
