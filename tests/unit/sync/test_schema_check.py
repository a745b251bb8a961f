"""The schema check of a job's source against its mapping and policy (issue #10, 1)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_core.adapters import Adapter, SourceFields
from connector_core.config import Config, load_config
from connector_core.errors import ConfigValidationError
from connector_core.masks import MaskContext
from connector_core.plugins import collect_adapters, make_plugin_manager
from connector_core.policy.compiler import compile_policy
from connector_core.query import Condition, matches
from connector_core.sync.job import load_job, load_job_policy
from connector_core.sync.schema_check import SourceChecks, _fields, _fires_without, check_source
from connector_core.testing import MemoryAdapter
from tests.unit.policy.strategies import conditions, records

ADAPTERS = collect_adapters(make_plugin_manager())
CONFIG = """\
version: 1
network: {name: Test network%(floor)s}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
    contact_me: {description: We may contact me}
connections:
  crm:
    adapter: csv
    settings: {path: crm.csv, key_column: Ref}
    mapping:
%(mapping)s
  out: {adapter: csv, settings: {path: out.csv}}
jobs:
  north: {source: crm, target: out, policy: north.yaml}
"""
MAPPING = """\
      city: Town
      consent.local_organizing: Local OK
"""
POLICY = """\
policy: north
require_consent: [local_organizing]
rules:
  - allow: in Leeds
    when: {city: Leeds}
fields:
  city: show
"""
HEADER = "Ref,Town,Local OK,Shoe size\n"


class Network:
    """A folder holding connector.yaml, north.yaml and the source file crm.csv."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.write(mapping=MAPPING, policy=POLICY, header=HEADER)

    def write(self, **parts: str) -> None:
        if "header" in parts:
            (self.root / "crm.csv").write_text(parts["header"] + "R1,Leeds,yes,42\n")
        if "policy" in parts:
            (self.root / "north.yaml").write_text(parts["policy"])
        if "mapping" in parts or "floor" in parts:
            floor = ", floor: floor.yaml" if parts.get("floor") else ""
            if parts.get("floor"):
                (self.root / "floor.yaml").write_text(parts["floor"])
            mapping = parts.get("mapping", MAPPING)
            text = CONFIG % {"mapping": mapping, "floor": floor}
            (self.root / "connector.yaml").write_text(text)

    @property
    def config(self) -> Config:
        return load_config(self.root / "connector.yaml", ADAPTERS)

    def check(self) -> Any:
        config = self.config
        policy = compile_policy(load_job_policy(config, config.job("north").policy))
        with config.open_adapter("crm") as adapter:
            return check_source(config, "crm", adapter, policy)


@pytest.fixture
def network(tmp_path: Path) -> Network:
    return Network(tmp_path)


def test_a_matching_source_passes(network: Network) -> None:
    report = network.check()
    assert report.checked
    assert report.errors == report.warnings == []
    assert {"id", "city", "consent.local_organizing"} <= report.fields.provided


def test_default_entries_the_file_lacks_are_not_errors(network: Network) -> None:
    """The csv adapter maps every canonical field to a same-named column by default."""
    report = network.check()
    assert "phone" in {m.canonical for m in report.fields.missing}
    assert report.errors == []


def test_a_written_entry_the_file_lacks_is_an_error_at_its_line(network: Network) -> None:
    network.write(header="Ref,City,Local OK\n")
    (error,) = network.check().errors
    assert error.path == str(network.root / "connector.yaml")
    assert error.line == 12
    assert "connections.crm.mapping.city: 'Town' is not in the header of" in error.message
    assert "(did you mean 'City'?)" in error.message
    assert "it has 'Ref', 'City', 'Local OK'" in error.message
    assert "Fix:" in error.message


def test_a_missing_key_column_is_an_error_even_as_a_default(network: Network) -> None:
    network.write(header="Reference,Town,Local OK\n")
    errors = network.check().errors
    assert [e.line for e in errors] == [10]
    assert "connections.crm.settings.key_column: 'Ref' is not in" in errors[0].message
    assert "(did you mean 'Reference'?)" in errors[0].message
    assert "every record needs its key" in errors[0].message


def test_load_job_raises_every_problem_at_once(network: Network) -> None:
    network.write(header="Reference,City\n")
    with pytest.raises(ConfigValidationError) as raised:
        load_job(network.config, "north", context=MaskContext.with_key(b"k"))
    assert len(raised.value.problems) == 3  # key, city, consent column
    assert raised.value.exit_code == 3
    assert "Nothing was written" in (raised.value.hint or "")


@pytest.mark.parametrize(
    ("policy", "line", "text"),
    [
        (POLICY.replace("{city: Leeds}", "{tags: {any_of: [x]}}"), 4, "tests tags"),
        (POLICY.replace("{city: Leeds}", "{consent.contact_me: true}"), 4, "contact_me"),
        (POLICY + "  phone: last4\n", 8, "masks phone"),
    ],
    ids=["rule", "consent-in-rule", "mask"],
)
def test_what_the_policy_needs_must_be_provided(
    network: Network, policy: str, line: int, text: str
) -> None:
    network.write(policy=policy)
    (error,) = network.check().errors
    assert (error.path, error.line) == (str(network.root / "north.yaml"), line)
    assert text in error.message
    assert "which connection 'crm' does not provide" in error.message


def test_a_mapped_extra_the_file_lacks_is_reported_once(network: Network) -> None:
    network.write(mapping=MAPPING + "      extra.csv.shoe: Shoe\n")
    network.write(policy=POLICY + "  extra.csv.shoe: show\n")
    (error,) = network.check().errors
    assert error.path == str(network.root / "connector.yaml")
    assert "'Shoe' is not in the header" in error.message
    assert "(did you mean 'Shoe size'?)" in error.message


def test_a_classification_shown_is_not_a_need(network: Network) -> None:
    network.write(policy=POLICY + "  pii.contact: show\n")
    assert network.check().errors == []


def test_a_required_purpose_without_evidence(network: Network) -> None:
    network.write(mapping="      city: Town\n")
    (error,) = network.check().errors
    assert (error.path, error.line) == (str(network.root / "north.yaml"), 2)
    assert "requires consent 'local_organizing'" in error.message
    assert "it maps nothing to consent.local_organizing" in error.message


FLOOR = """\
policy: floor
rules:
  - allow: anyone
  - forbid: deceased
    when: {is_deceased: true}
fields:
  city: show
"""


def test_a_floor_forbid_that_cannot_fire_is_a_warning(network: Network) -> None:
    network.write(floor=FLOOR)
    report = network.check()
    assert report.errors == []
    (warning,) = report.warnings
    assert warning.severity == "warning"
    assert "forbid rule 'deceased' tests is_deceased" in warning.message
    assert "withholds nobody read from it" in warning.message


def test_a_floor_forbid_that_fires_without_the_field_is_an_error(network: Network) -> None:
    network.write(floor=FLOOR.replace("{is_deceased: true}", "{email: {exists: false}}"))
    (error,) = network.check().errors
    assert "forbid rule 'deceased' tests email" in error.message


def test_a_leaf_forbid_on_a_missing_field_is_an_error(network: Network) -> None:
    rule = "  - forbid: x\n    when: {do_not_phone: true}\nfields:"
    network.write(policy=POLICY.replace("fields:", rule))
    (error,) = network.check().errors
    assert "forbid rule 'x' tests do_not_phone" in error.message


def test_many_jobs_checked_at_once_get_what_each_gets_alone(network: Network) -> None:
    """SourceChecks shares a report between policies that need the same (a template's
    partners, whose values differ), never between policies that need different fields:
    each policy's report is check_source's for it alone, the floor's warning included."""
    network.write(floor=FLOOR)
    config = network.config
    forbid = "rules:\n  - forbid: x\n    when: {is_deceased: true}"
    variants = [
        POLICY,
        POLICY.replace("Leeds}", "York}"),  # another value: the same needs
        POLICY.replace("{city: Leeds}", "{is_deceased: false}"),  # a field crm lacks
        POLICY.replace("Leeds}", "York}").replace("rules:", forbid),  # the same, a forbid
    ]
    policies = []
    for n, text in enumerate(variants):
        path = network.root / f"north{n}.yaml"
        path.write_text(text)
        policies.append(compile_policy(load_job_policy(config, path)))
    checks = SourceChecks(config)
    with config.open_adapter("crm") as adapter:
        for policy in [*policies, *policies]:
            together = checks.check("crm", adapter, policy)
            alone = check_source(config, "crm", adapter, policy)
            assert (together.errors, together.warnings) == (alone.errors, alone.warnings)
    assert [len(checks.check("crm", adapter, p).errors) for p in policies] == [0, 0, 1, 1]
    assert all(len(checks.check("crm", adapter, p).warnings) == 1 for p in policies)


def test_an_empty_file_has_no_columns(network: Network) -> None:
    (network.root / "crm.csv").write_bytes(b"")
    errors = network.check().errors
    assert len(errors) == 3
    assert all("no header, no columns" in e.message for e in errors)
    assert all("it lists no names" in e.message for e in errors)


def test_a_file_without_its_header_row_shows_no_cells(network: Network) -> None:
    (network.root / "crm.csv").write_text("R1,Leeds,yes,42\nR2,York,no,40\n")
    errors = network.check().errors
    assert len(errors) == 3
    assert all("is the header row missing?" in e.message for e in errors)
    assert not any("Leeds" in e.message or "R1" in e.message for e in errors)


def test_adapters_that_cannot_tell_are_not_checked(network: Network) -> None:
    config = network.config
    policy = compile_policy(load_job_policy(config, config.job("north").policy))
    adapter = MemoryAdapter(MemoryAdapter.settings_model.model_validate({"store": "s"}))
    assert Adapter.available_fields(adapter) is None
    report = check_source(config, "crm", adapter, policy)
    assert not report.checked
    assert report.errors == []


class _Listed(MemoryAdapter):
    def available_fields(self) -> SourceFields:
        return SourceFields(frozenset({"id", "city"}), source="a list")


def test_the_check_uses_what_the_adapter_lists(network: Network) -> None:
    config = network.config
    policy = compile_policy(load_job_policy(config, config.job("north").policy))
    adapter = _Listed(MemoryAdapter.settings_model.model_validate({"store": "s"}))
    (error,) = check_source(config, "crm", adapter, policy).errors
    assert "requires consent 'local_organizing'" in error.message


def test_count_defaults_to_reading_ids(network: Network) -> None:
    with network.config.open_adapter("crm") as adapter:
        assert adapter.count() == 1
        assert Adapter.count(adapter) == 1


def _without(record: dict[str, Any], field: str) -> dict[str, Any]:
    if field.startswith("consent."):
        consent = dict(record.get("consent") or {})
        consent.pop(field.split(".", 1)[1], None)
        return {**record, "consent": consent}
    return {k: v for k, v in record.items() if k != field}


@given(conditions(), records(), st.data())
def test_a_rule_that_cannot_fire_without_a_field_never_does(
    condition: Condition | None, record: dict[str, Any], data: st.DataObject
) -> None:
    """When _fires_without says no, lacking the field never makes the condition hold."""
    for field in set(_fields(condition)):
        if not _fires_without(condition, field) and matches(condition, _without(record, field)):
            assert matches(condition, record)


PROPERTY_MAPPING = """\
      city: Town
      region: Region
      consent.local_organizing: Local OK
"""
#: column -> the line of connector.yaml that names it (key_column for Ref)
WRITTEN_AT = {"Ref": 10, "Town": 12, "Region": 13, "Local OK": 14}


@given(
    kept=st.sets(st.sampled_from(sorted(WRITTEN_AT))),
    noise=st.lists(st.sampled_from(["Notes", "Shoe size", "town", "REGION"]), unique=True),
)
def test_every_dropped_column_is_one_error_at_its_line(kept: set[str], noise: list[str]) -> None:
    """Whatever columns a new export drops, each is reported once, where it is named."""
    with tempfile.TemporaryDirectory() as folder:
        network = Network(Path(folder))
        network.write(mapping=PROPERTY_MAPPING)
        network.write(policy=POLICY.replace("{city: Leeds}", "{region: North}"))
        header = [c for c in WRITTEN_AT if c in kept] + noise
        (network.root / "crm.csv").write_text(",".join(header) + "\n")
        report = network.check()
        assert sorted(e.line for e in report.errors) == sorted(
            line for column, line in WRITTEN_AT.items() if column not in kept
        )
        assert report.warnings == []
