"""For any consent value, every door agrees: shared exactly when it is an explicit yes.

The doors: sync from a CSV file and from a vCard, `policy preview` of JSON lines, policy
test fixtures and `policy explain` (each through the function its command calls).
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import vobject
from connector_csv import CsvAdapter, CsvSettings
from connector_nextcloud.vcard import CardFormat, parse_card
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector_core.cli.policy import _input_records, read_record_file
from connector_core.consent import YES
from connector_core.errors import ConfigError
from connector_core.policy.compiler import CompiledPolicy, compile_policy
from connector_core.policy.explain import explain
from connector_core.policy.loader import load_policy
from connector_core.policy.policytest import Case, check_case

POLICY = """\
policy: chapter
require_consent: [local_organizing]
rules:
  - allow: everyone
fields: {first_name: show}
"""

VALUES = st.one_of(
    st.sampled_from(
        [*sorted(YES), "no", "false", "0", "withdrawn", "", " ", "null", "maybe", "Yes ", "2"]
    ),
    st.text(max_size=12),
).filter(lambda v: "\x00" not in v and not any(0xD800 <= ord(c) <= 0xDFFF for c in v))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledPolicy:
    path = tmp_path_factory.mktemp("policy") / "chapter.yaml"
    path.write_text(POLICY)
    return compile_policy(load_policy(path))


def _person(value: str) -> dict[str, Any]:
    return {"id": "1", "first_name": "Ana", "consent": {"local_organizing": value}}


def _by_csv(compiled: CompiledPolicy, value: str, folder: Path) -> bool:
    path = folder / "people.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["id", "first_name", "Local"], ["1", "Ana", value]])
    adapter = CsvAdapter(CsvSettings(path=path), mapping={"consent.local_organizing": "Local"})
    records = [r for page in adapter.read() for r in page.records]
    return any(compiled.evaluate(r)[0].share for r in records)


def _by_vcard(compiled: CompiledPolicy, value: str, folder: Path) -> bool:
    card = vobject.vCard()
    card.add("fn").value = "Ana"
    card.add("uid").value = "1"
    card.add("x-commons-consent").value = f"local_organizing={value}"
    record = parse_card(card.serialize(), CardFormat(), card_id="1").record
    return compiled.evaluate(record)[0].share


def _by_preview(compiled: CompiledPolicy, value: str, folder: Path) -> bool:
    path = folder / "people.jsonl"
    path.write_text(json.dumps(_person(value)) + "\n")
    problems: list[str] = []
    records = list(_input_records(None, str(path), problems))  # type: ignore[arg-type]
    return any(compiled.evaluate(r)[0].share for r in records)


def _by_policy_test(compiled: CompiledPolicy, value: str, folder: Path) -> bool:
    case = Case.model_validate(
        {"name": "n", "record": _person(value), "expect": {"decision": "share"}}
    )
    return not check_case(compiled, case)


def _by_explain(compiled: CompiledPolicy, value: str, folder: Path) -> bool:
    path = folder / "person.json"
    path.write_text(json.dumps(_person(value)))
    try:
        record = read_record_file(path)
    except ConfigError:
        return False
    return explain(compiled, record).decision.share


DOORS: dict[str, Callable[[CompiledPolicy, str, Path], bool]] = {
    "csv sync": _by_csv,
    "vcard sync": _by_vcard,
    "preview": _by_preview,
    "policy test": _by_policy_test,
    "explain": _by_explain,
}


@settings(max_examples=120, deadline=None)
@given(value=VALUES)
@example(value="no")
@example(value="false")
@example(value="0")
@example(value="withdrawn")
@example(value=" Yes ")
def test_every_door_shares_exactly_an_explicit_yes(compiled: CompiledPolicy, value: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        decisions = {name: door(compiled, value, Path(folder)) for name, door in DOORS.items()}
    expected = value.strip().lower() in YES
    assert decisions == dict.fromkeys(DOORS, expected), value
