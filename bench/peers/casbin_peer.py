"""pycasbin: policy (a) as an ABAC model whose rules are policy rows, not code.

Two enforcers share the recipient: one takes the row decision (``share``: an allow row on
region, deny rows on consent and death; deny beats allow), the other one decision per field
(``read:<field>``), whose matching row names the outcome. The matcher compares one attribute
of the request object per row, which casbin parses once per request; ``eval()`` of a rule
per row (the other ABAC style) re-parses every row on every request and is much slower.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench.peers import (
    ASKED_FIELDS,
    RECIPIENT,
    Peer,
    PeerUnavailable,
    Plan,
    Record,
    consent_granted,
)

ROW_MODEL = """\
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, act, attr, value, eft

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = r.sub == p.sub && r.act == p.act && r.obj[p.attr] == p.value
"""

ROW_POLICY = f"""\
p, {RECIPIENT}, share, region, North, allow
p, {RECIPIENT}, share, local_organizing, no, deny
p, {RECIPIENT}, share, is_deceased, yes, deny
"""

FIELD_MODEL = """\
[request_definition]
r = sub, act

[policy_definition]
p = sub, act, outcome

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.sub == p.sub && r.act == p.act
"""

FIELD_POLICY = f"""\
p, {RECIPIENT}, read:first_name, show
p, {RECIPIENT}, read:last_name, show
p, {RECIPIENT}, read:city, show
p, {RECIPIENT}, read:phone, last4
"""


def _attributes(record: Record) -> dict[str, str]:
    """The request object: the attributes the rows test, as strings (casbin CSV values)."""
    return {
        "region": str(record.get("region")),
        "local_organizing": "yes" if consent_granted(record) else "no",
        "is_deceased": "yes" if record.get("is_deceased") is True else "no",
    }


class CasbinPeer(Peer):
    """casbin.Enforcer, row decisions with batch_enforce, fields with enforce_ex."""

    name: ClassVar[str] = "casbin"
    description: ClassVar[str] = "pycasbin (ABAC rows), batch_enforce + enforce_ex per field"

    def __init__(self) -> None:
        self._rows: Any = None
        self._fields: Any = None

    def start(self) -> None:
        """Write the models and policies to a temp dir and load both enforcers."""
        try:
            import casbin  # type: ignore[import-untyped]
        except ImportError as err:
            raise PeerUnavailable(f"casbin: {err}; run `uv sync` (the bench group)") from err
        logging.getLogger("casbin").setLevel(logging.ERROR)  # it logs every denial
        with tempfile.TemporaryDirectory(prefix="bench-casbin-") as tmp:
            self._rows = casbin.Enforcer(*_write(Path(tmp), "rows", ROW_MODEL, ROW_POLICY))
            self._fields = casbin.Enforcer(*_write(Path(tmp), "fields", FIELD_MODEL, FIELD_POLICY))

    def plans(self, records: Sequence[Record]) -> list[Plan | None]:
        """Row decisions for all, then one decision per field for the shared records."""
        decisions = self._rows.batch_enforce(
            [(RECIPIENT, _attributes(r), "share") for r in records]
        )
        return [self._plan() if share else None for share in decisions]

    def _plan(self) -> Plan:
        plan: Plan = {}
        for field in ASKED_FIELDS:
            allowed, rule = self._fields.enforce_ex(RECIPIENT, f"read:{field}")
            if allowed:
                plan[field] = rule[2]
        return plan


def _write(folder: Path, name: str, model: str, policy: str) -> tuple[str, str]:
    (folder / f"{name}.conf").write_text(model)
    (folder / f"{name}.csv").write_text(policy)
    return str(folder / f"{name}.conf"), str(folder / f"{name}.csv")
