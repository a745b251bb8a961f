"""The machine's Redis for the worker tests, and private redis-servers a test may restart.

A missing Redis fails the test, never skips it: worker mode is tested with its real parts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

# The server to test on; CONNECTOR_TEST_REDIS overrides it (no database number at the end).
REDIS_SERVER = os.environ.get("CONNECTOR_TEST_REDIS", "redis://127.0.0.1:6379")
#: The database the worker tests use on it (not 0, which others may use); flushed per test,
#: so each pytest-xdist worker (scripts/test runs at most 3) has its own: 13, 14, 15.
REDIS_DB = int(os.environ.get("CONNECTOR_TEST_REDIS_DB", "13")) + int(
    os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0
)


def machine_redis() -> str:
    """The URL of the test database on the machine's Redis, emptied; fails when unreachable."""
    url = f"{REDIS_SERVER}/{REDIS_DB}"
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_SERVER} ({exc}); see scripts/services")
    finally:
        client.close()
    return url


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own on a free port, keeping its data in `folder` (an
    append-only file synced on every write), so that it can be stopped and started again
    with its queue intact, as a broker restarted by its admin would be."""

    def __init__(self, folder: Path) -> None:
        found = shutil.which("redis-server")
        if found is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.binary = found
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL (database 0 of this server)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--save", "", "--daemonize", "no", "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    pytest.fail(f"redis-server did not start: {self.folder / 'redis.log'}")
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """Stop the server as its admin would (SIGTERM: it writes its data out first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
