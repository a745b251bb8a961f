"""A small fan-in network for tests: partner CSV sources, a suppression list, a national CSV.

:class:`FanInNetwork` writes connector.yaml, the policies and the partners' files in a folder
and runs the fan-in ``national`` in-process (or through the CLI, with :func:`cli`); tests of
the engine, of the CLI and the property test share it.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from connector_core.config import Config, load_config
from connector_core.plugins import collect_adapters, make_plugin_manager
from connector_core.sync.fanin import load_fan_in, run_fan_in
from connector_core.sync.runner import RunResult
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY
from tests.integration.test_cli import run as cli_run

COLUMNS = ["id", "email", "phone", "first_name", "last_name", "city", "postal_code", "national"]
#: What each partner's policy lets go up (the fields of its `fields:` block).
ALLOWED = {
    "leeds": ("email", "first_name", "city"),
    "york": ("email", "phone", "last_name"),
    "hull": ("phone", "first_name", "postal_code"),
}
NATIONAL_FIELDS = ("email", "phone", "first_name", "last_name", "city", "postal_code")

CONFIG = """\
version: 1
network:
  name: Fan-in Test Network
consent:
  purposes:
    national: {description: May be known to the national group.}
connections:
%(connections)s
  nono:
    adapter: csv
    settings: {path: data/nono.csv}
  national_crm:
    adapter: csv
    settings: {path: out/national.csv}
fan_in:
  %(name)s:
    target: national_crm
    policy: policies/national.yaml
    purpose: national
    suppress: nono
    phone_country: "44"
    options: {max_delete: 100%%}
    sources:
%(sources)s
state:
  url: "%(state)s"
"""

CONNECTION = """\
  %(name)s:
    adapter: csv
    settings: {path: data/%(name)s.csv}
    mapping: {consent.national: national}
"""

SOURCE = "      - {partner: %(name)s, source: %(name)s, policy: policies/%(name)s-up.yaml}\n"

PARTNER_POLICY = """\
policy: %(name)s-up
require_consent: [national]
rules:
  - allow: everyone who agreed
%(when)s
fields:
%(fields)s
"""

NATIONAL_POLICY = """\
policy: national
require_consent: [national]
rules:
  - allow: everyone
fields:
{}
""".format("".join(f"  {f}: show\n" for f in NATIONAL_FIELDS))


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: list[str]) -> None:
    """Write `rows` as a CSV file with `columns` (missing cells empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.DictWriter(f, columns)
        out.writeheader()
        for row in rows:
            out.writerow({c: row.get(c, "") for c in columns})


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file ([] if it does not exist)."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


class FanInNetwork:
    """A fan-in network in `root`: partners (ALLOWED's), a suppression list, a state URL."""

    def __init__(
        self,
        root: Path,
        state_url: str | None = None,
        partners: Iterable[str] = ("leeds", "york", "hull"),
        where: Mapping[str, str] | None = None,
        name: str = "national",
    ) -> None:
        self.root = root
        self.name = name
        self.state_url = state_url or f"sqlite:///{root / 'state.db'}"
        self.partners = list(partners)
        self.where = dict(where or {})
        (root / "policies").mkdir(parents=True, exist_ok=True)
        (root / "out").mkdir(exist_ok=True)
        (root / "policies" / "national.yaml").write_text(NATIONAL_POLICY, encoding="utf-8")
        for name in ALLOWED:
            when = f"    when: {self.where[name]}" if name in self.where else ""
            fields = "".join(f"  {f}: show\n" for f in ALLOWED[name])
            text = PARTNER_POLICY % {"name": name, "when": when, "fields": fields}
            (root / "policies" / f"{name}-up.yaml").write_text(text, encoding="utf-8")
        self.suppress([])
        for name in self.partners:
            self.partner(name, [])
        self.configure(self.partners)

    def configure(self, partners: Iterable[str]) -> None:
        """Write connector.yaml with these partners feeding the fan-in."""
        names = list(partners)
        text = CONFIG % {
            "connections": "".join(CONNECTION % {"name": n} for n in ALLOWED),
            "sources": "".join(SOURCE % {"name": n} for n in names),
            "state": self.state_url,
            "name": self.name,
        }
        self.config_path.write_text(text, encoding="utf-8")

    @property
    def config_path(self) -> Path:
        """connector.yaml."""
        return self.root / "connector.yaml"

    def partner(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Write partner `name`'s source file."""
        write_csv(self.root / "data" / f"{name}.csv", rows, COLUMNS)

    def suppress(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Write the suppression list (rows with email and/or phone; ids are added)."""
        numbered = [{"id": f"n{i}", **row} for i, row in enumerate(rows)]
        write_csv(self.root / "data" / "nono.csv", numbered, ["id", "email", "phone"])

    def config(self) -> Config:
        """connector.yaml, loaded."""
        return load_config(self.config_path, collect_adapters(make_plugin_manager()))

    def run(
        self, *, now: dt.datetime | None = None, dry_run: bool = False, accept_deletes: int = 0
    ) -> RunResult:
        """Run the fan-in in-process."""
        loaded = load_fan_in(self.config(), self.name)
        try:
            with self.store() as store:
                return run_fan_in(
                    loaded, store, now=now, dry_run=dry_run, accept_deletes=accept_deletes
                )
        finally:
            loaded.close()

    def store(self) -> StateStore:
        """The network's state store, open (close it: use as a context manager)."""
        return StateStore.open(self.state_url, ledger_key=TEST_LEDGER_KEY)

    def national(self) -> list[dict[str, str]]:
        """The national target's rows."""
        return read_csv(self.root / "out" / "national.csv")

    def by_email(self) -> dict[str, dict[str, str]]:
        """The national target's rows by email, trimmed and lower-cased (rows without one
        under their phone)."""
        return {r["email"].strip().lower() or r["phone"]: r for r in self.national()}


def cli(runner: CliRunner, net: FanInNetwork, *args: str) -> Result:
    """`connector --config CONFIG ARGS` for the network."""
    return cli_run(runner, "--config", str(net.config_path), *args)
