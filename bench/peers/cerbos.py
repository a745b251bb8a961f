"""Cerbos: policy (a) as a resource policy, decided by the Cerbos PDP over its HTTP API.

The PDP is the binary in the npm package ``@cerbos/cerbos-linux-x64`` (or ``-arm64``;
bench/setup installs it into ``bench/.peers``), started on 127.0.0.1 with a free port, a
temporary config and a policy directory. Per 500 contacts (the most the PDP takes in one
CheckResources request) one request asks ``share`` for each, a second ``read:<field>`` for
each field of the shared ones; a field rule's output names its outcome (``show``, a mask).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import requests

from bench.peers import ASKED_FIELDS, PEERS_DIR, RECIPIENT, Peer, PeerUnavailable, Plan, Record

_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
_BUILD = f"cerbos-linux-{_ARCH.get(platform.machine().lower(), platform.machine())}"
BINARY = PEERS_DIR / "node_modules" / "@cerbos" / _BUILD / _BUILD
MAX_RESOURCES = 500  # the most the PDP accepts per CheckResources request (default 50)

POLICY = """\
apiVersion: api.cerbos.dev/v1
resourcePolicy:
  resource: contact
  version: default
  rules:
    - name: northern-supporters
      actions: [share]
      effect: EFFECT_ALLOW
      roles: [organizer]
      condition:
        match:
          expr: request.resource.attr.region == "North"
    - name: consent-local-organizing
      actions: [share]
      effect: EFFECT_DENY
      roles: ["*"]
      condition:
        match:
          expr: >-
            !(has(request.resource.attr.consent.local_organizing)
              && request.resource.attr.consent.local_organizing.granted == true)
    - name: deceased
      actions: [share]
      effect: EFFECT_DENY
      roles: ["*"]
      condition:
        match:
          expr: request.resource.attr.is_deceased == true
%(field_rules)s"""

FIELD_RULE = """\
    - name: field-%(field)s
      actions: ["read:%(field)s"]
      effect: EFFECT_ALLOW
      roles: [organizer]
      output:
        when:
          ruleActivated: '{"field": "%(field)s", "outcome": "%(outcome)s"}'
"""
OUTCOMES = {"first_name": "show", "last_name": "show", "city": "show", "phone": "last4"}

CONFIG = """\
server:
  httpListenAddr: "127.0.0.1:%(http)d"
  grpcListenAddr: "127.0.0.1:%(grpc)d"
  requestLimits:
    maxResourcesPerRequest: %(batch)d
storage:
  driver: disk
  disk:
    directory: "%(policies)s"
    watchForChanges: false
audit:
  enabled: false
"""
FIELDS = [f"read:{field}" for field in ASKED_FIELDS]
PRINCIPAL = {"id": RECIPIENT, "roles": ["organizer"]}


def binary() -> Path:
    """The PDP binary (``CERBOS_BIN`` overrides the one bench/setup installs)."""
    path = Path(os.environ.get("CERBOS_BIN", BINARY))
    if not path.is_file():
        raise PeerUnavailable(f"cerbos: no PDP binary at {path}; run bench/setup")
    return path


def free_port() -> int:
    """A port nobody listens on right now, on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CerbosPeer(Peer):
    """A private PDP process, asked through CheckResources in batches of 500 contacts."""

    name: ClassVar[str] = "cerbos"
    description: ClassVar[str] = "Cerbos PDP (npm binary), HTTP CheckResources, 500 per request"

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._session = requests.Session()
        self._url = ""

    def start(self) -> None:
        """Write the config and policy to a temp dir, launch the PDP, wait until it is up."""
        executable = binary()
        self._dir = Path(tempfile.mkdtemp(prefix="bench-cerbos-"))
        policies = self._dir / "policies"
        policies.mkdir()
        field_rules = "".join(
            FIELD_RULE % {"field": field, "outcome": OUTCOMES[field]} for field in ASKED_FIELDS
        )
        (policies / "contact.yaml").write_text(POLICY % {"field_rules": field_rules})
        port = free_port()
        config = self._dir / "config.yaml"
        config.write_text(
            CONFIG
            % {"http": port, "grpc": free_port(), "batch": MAX_RESOURCES, "policies": policies}
        )
        self._url = f"http://127.0.0.1:{port}"
        self._log = (self._dir / "cerbos.log").open("wb")
        self._process = subprocess.Popen(
            [str(executable), "server", f"--config={config}", "--log-level=error"],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, "CERBOS_NO_TELEMETRY": "1"},
        )
        self._wait_until_up()

    def _wait_until_up(self, timeout: float = 30.0) -> None:
        if self._process is None or self._dir is None:
            raise PeerUnavailable("cerbos: the PDP was not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self._dir / "cerbos.log").read_text(errors="replace")[-2000:]
                raise PeerUnavailable(f"cerbos: the PDP exited ({self._process.returncode}): {log}")
            try:
                if self._session.get(f"{self._url}/_cerbos/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.close()
        raise PeerUnavailable(f"cerbos: the PDP did not answer within {timeout:.0f} s")

    def close(self) -> None:
        """Stop the PDP and remove its temp dir."""
        self._session.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def plans(self, records: Sequence[Record]) -> list[Plan | None]:
        """Row decisions and then field decisions, for 500 contacts at a time."""
        out: list[Plan | None] = []
        for start in range(0, len(records), MAX_RESOURCES):
            out.extend(self._check(records[start : start + MAX_RESOURCES]))
        return out

    def _check(self, chunk: Sequence[Record]) -> list[Plan | None]:
        # Two requests (rows, then fields of the shared contacts) beat one with every action.
        resources = [_resource(r) for r in chunk]
        rows = self._ask(resources, ["share"])
        shared = [res for res, row in zip(resources, rows, strict=True) if _allowed(row, "share")]
        plans = {result["resource"]["id"]: _plan(result) for result in self._ask(shared, FIELDS)}
        return [plans.get(res["id"]) for res in resources]

    def _ask(self, resources: list[dict[str, Any]], actions: list[str]) -> list[dict[str, Any]]:
        if not resources:
            return []
        body = {
            "requestId": resources[0]["id"],
            "principal": PRINCIPAL,
            "resources": [{"actions": actions, "resource": res} for res in resources],
        }
        response = self._session.post(f"{self._url}/api/check/resources", json=body, timeout=60)
        response.raise_for_status()
        results: list[dict[str, Any]] = response.json()["results"]
        return results


def _resource(record: Record) -> dict[str, Any]:
    attr = {
        "region": record.get("region"),
        "is_deceased": record.get("is_deceased"),
        "consent": record.get("consent") or {},
    }
    return {"kind": "contact", "id": record["id"], "attr": attr}


def _allowed(result: dict[str, Any], action: str) -> bool:
    return bool(result["actions"].get(action) == "EFFECT_ALLOW")


def _plan(result: dict[str, Any]) -> Plan:
    outcomes = {o["val"]["field"]: o["val"]["outcome"] for o in result.get("outputs", ())}
    return {field: outcomes[field] for field in ASKED_FIELDS if _allowed(result, f"read:{field}")}
