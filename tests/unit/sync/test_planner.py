"""The planner decides creates, updates, deletes and nothing, from records and the id map;
batches hold each cursor back until the changes it covers are recorded."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_core.cells import strip_controls_deep
from connector_core.masks import BUILTIN_MASKS, MaskContext
from connector_core.policy.compiler import CompiledPolicy, compile_policy
from connector_core.policy.loader import load_policy
from connector_core.sync.batches import Batches
from connector_core.sync.keys import (
    KEY_NAMESPACE,
    TargetKeys,
    legacy_target_key,
    projection_hash,
    target_key,
)
from connector_core.sync.model import UNKNOWN_HASH, Mapped
from connector_core.sync.planner import (
    AFTER_INTERRUPTION,
    DELETED_AT_SOURCE,
    MISSING_AT_SOURCE,
    WITHDRAWN,
    Planner,
    Step,
    _without_controls,
)

SECRET = b"planner test key secret"
KEYS = TargetKeys("job", SECRET)

POLICY = """\
policy: organizers
require_consent: [local_organizing]
rules:
  - allow: in the North
    when: {region: North}
  - forbid: no phone calls
    when: {do_not_phone: true}
fields:
  first_name: show
  city: show
  phone: last4
"""


@pytest.fixture
def policy(tmp_path: Path) -> CompiledPolicy:
    path = tmp_path / "organizers.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return compile_policy(load_policy(path), context=MaskContext.with_key(b"k"))


@pytest.fixture
def planner(policy: CompiledPolicy) -> Planner:
    return Planner("job", policy, keys=KEYS, with_diff=True)


def person(source_id: str, **fields: Any) -> dict[str, Any]:
    """A consenting northerner, with `fields` on top."""
    consent = {"local_organizing": {"granted": True, "source": "test", "at": None}}
    base = {
        "id": source_id,
        "first_name": "Ana",
        "city": "Leeds",
        "phone": "01134960123",
        "region": "North",
        "consent": consent,
    }
    return {**base, **fields}


def mapped_as(planner: Planner, record: dict[str, Any]) -> Mapped:
    """The id map row a previous run left for `record` as it is now."""
    _, projection = planner.policy.evaluate(record)
    assert projection is not None
    return Mapped(
        job="job",
        source_id=record["id"],
        target_key=target_key("job", record["id"], SECRET),
        projection_hash=projection_hash(projection, planner.salt),
        fields={"first_name": "show", "city": "show", "phone": "mask:last4"},
        consent_basis={},
        policy_hash="x",
    )


def test_a_new_shared_record_is_created_under_the_derived_key(planner: Planner) -> None:
    plan = planner.plan_page([person("p1")], {})
    (step,) = plan.steps
    assert step.planned.action == "create"
    assert step.change.action == "upsert"
    assert step.change.key == target_key("job", "p1", SECRET) != "p1"
    assert step.change.record == {"first_name": "Ana", "city": "Leeds", "phone": "*******0123"}
    assert step.planned.diff["phone"] == (None, "*******0123")
    assert step.applied.fields == {"first_name": "show", "city": "show", "phone": "mask:last4"}
    assert step.applied.consent_basis == {
        "local_organizing": {"granted": True, "source": "test", "at": None}
    }
    assert step.applied.reason == "shared:in the North"
    assert plan.shared == 1


def test_keys_are_deterministic_and_differ_per_job() -> None:
    assert target_key("job", "p1", SECRET) == target_key("job", "p1", SECRET)
    assert target_key("job", "p1", SECRET) != target_key("other", "p1", SECRET)


def test_an_unchanged_projection_plans_nothing(planner: Planner) -> None:
    record = person("p1")
    plan = planner.plan_page([record], {"p1": mapped_as(planner, record)})
    assert plan.steps == []
    assert (plan.shared, plan.unchanged) == (1, 1)


def test_a_changed_projection_is_an_update_of_the_mapped_key(planner: Planner) -> None:
    row = dataclasses.replace(mapped_as(planner, person("p1")), target_key="kept-key")
    plan = planner.plan_page([person("p1", city="York")], {"p1": row})
    (step,) = plan.steps
    assert (step.planned.action, step.change.key) == ("update", "kept-key")
    assert step.planned.diff["city"] == (None, "York")  # old values are not stored


def test_a_field_that_is_no_longer_shared_shows_in_the_diff(planner: Planner) -> None:
    row = mapped_as(planner, person("p1"))
    plan = planner.plan_page([person("p1", phone=None)], {"p1": row})
    (step,) = plan.steps
    assert step.planned.diff["phone"] == (None, None)
    assert "phone" not in step.applied.fields


@pytest.mark.parametrize(
    ("change", "reason", "withheld"),
    [
        (
            {"consent": {"local_organizing": {"granted": False, "source": "t", "at": None}}},
            "withdrawn:local_organizing",
            "consent:local_organizing",
        ),
        ({"consent": {}}, "consent:local_organizing", None),
        ({"region": "South"}, "no-allow:organizers", None),
        ({"do_not_phone": True}, "forbid:organizers:no phone calls", None),
        ({"deleted": True}, DELETED_AT_SOURCE, None),
    ],
    ids=["consent-withdrawn", "no-evidence", "moved-region", "forbidden", "deleted"],
)
def test_a_mapped_record_that_leaves_the_scope_is_deleted(
    planner: Planner, change: dict[str, Any], reason: str, withheld: str | None
) -> None:
    row = dataclasses.replace(mapped_as(planner, person("p1")), target_key="kept-key")
    plan = planner.plan_page([person("p1", **change)], {"p1": row})
    (step,) = plan.steps
    assert (step.planned.action, step.change.action, step.change.key) == (
        "delete",
        "delete",
        "kept-key",
    )
    assert step.applied.reason == step.planned.reason == reason
    assert step.applied.projection_hash is None
    assert plan.withheld == {withheld or reason: 1}
    assert step.planned.diff == dict.fromkeys(row.fields, (None, None))


def test_consent_withdrawal_records_the_evidence(planner: Planner) -> None:
    state = {"granted": False, "source": "crm", "at": "2024-05-01T10:00:00+00:00"}
    record = person("p1", consent={"local_organizing": state})
    plan = planner.plan_page([record], {"p1": mapped_as(planner, person("p1"))})
    assert plan.steps[0].applied.consent_basis == {"local_organizing": state}


def test_a_withheld_record_never_shared_plans_nothing(planner: Planner) -> None:
    plan = planner.plan_page([person("p1", region="South")], {})
    assert plan.steps == []
    assert plan.withheld == {"no-allow:organizers": 1}


def test_an_outstanding_unrecorded_create_is_written_again_or_cleaned_up(
    planner: Planner,
) -> None:
    sent = dataclasses.replace(
        mapped_as(planner, person("p1")),
        target_key="sent-key",
        projection_hash=UNKNOWN_HASH,
        recorded=False,
    )
    (shared,) = planner.plan_page([person("p1")], {"p1": sent}).steps
    assert (shared.planned.action, shared.change.key, shared.cleanup) == (
        "create",
        "sent-key",
        False,
    )
    (cleanup,) = planner.plan_page([person("p1", region="South")], {"p1": sent}).steps
    assert cleanup.cleanup
    assert cleanup.change == cleanup.change.delete("sent-key")
    assert cleanup.applied.reason == "no-allow:organizers"


def test_an_outstanding_recorded_change_is_rewritten_even_if_it_looks_unchanged(
    planner: Planner,
) -> None:
    row = dataclasses.replace(mapped_as(planner, person("p1")), projection_hash=UNKNOWN_HASH)
    (step,) = planner.plan_page([person("p1")], {"p1": row}).steps
    assert step.planned.action == "update"
    assert not step.cleanup


def test_an_explicit_no_is_a_withdrawal_and_missing_evidence_is_not(planner: Planner) -> None:
    known = {"p1": mapped_as(planner, person("p1"))}
    no = {"local_organizing": {"granted": False, "source": "crm", "at": None}}
    (withdrawn,) = planner.plan_page([person("p1", consent=no)], known).steps
    assert withdrawn.withdrawal
    assert withdrawn.applied.reason == f"{WITHDRAWN}local_organizing"
    (missing,) = planner.plan_page([person("p1", consent={})], known).steps
    assert not missing.withdrawal
    assert missing.applied.reason == "consent:local_organizing"


def test_a_job_interrupted_before_the_upgrade_cleans_up_under_its_old_keys(
    policy: CompiledPolicy,
) -> None:
    legacy = Planner("job", policy, keys=KEYS, cleanup=True)
    plan = legacy.plan_page([person("p1", region="South")], {})
    (step,) = plan.steps
    assert step.cleanup
    assert step.change == step.change.delete(KEYS("p1"))
    assert step.applied.reason == f"no-allow:organizers {AFTER_INTERRUPTION}"
    assert legacy.plan_page([person("p2")], {}).steps[0].cleanup is False


def test_missing_ids_are_deleted_with_their_mapped_keys(planner: Planner) -> None:
    row = dataclasses.replace(mapped_as(planner, person("p1")), target_key="kept-key")
    (step,) = planner.plan_missing([row])
    assert (step.planned.action, step.change.key, step.applied.reason) == (
        "delete",
        "kept-key",
        MISSING_AT_SOURCE,
    )


def _explode(param: Any, context: MaskContext) -> Any:
    def mask(value: Any, record: dict[str, Any]) -> Any:
        raise ValueError(f"cannot mask {value}")

    return mask


def test_a_mask_failure_rejects_the_record_without_its_values(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("last4", "explode"), encoding="utf-8")
    masks = {**BUILTIN_MASKS, "explode": _explode}
    compiled = compile_policy(load_policy(path, masks=masks), masks=masks)
    plan = Planner("job", compiled, keys=KEYS).plan_page(
        [person("p1"), person("p2", phone=None)], {}
    )
    assert [s.planned.source_id for s in plan.steps] == ["p2"]
    ((source_id, error, _),) = plan.rejected
    assert source_id == "p1"
    assert "explode" in error
    assert "0123" not in error


def test_the_salt_changes_every_hash(policy: CompiledPolicy) -> None:
    record = person("p1")
    plain = (
        Planner("job", policy, keys=KEYS).plan_page([record], {}).steps[0].applied.projection_hash
    )
    salted = Planner("job", policy, keys=KEYS, salt="t").plan_page([record], {}).steps[0]
    assert plain != salted.applied.projection_hash


def test_real_runs_skip_the_diff(policy: CompiledPolicy) -> None:
    (step,) = Planner("job", policy, keys=KEYS).plan_page([person("p1")], {}).steps
    assert step.planned.diff == {}


class Recorder:
    """Collects the batches `Batches` writes: (source ids, cursor)."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], str | None]] = []

    def __call__(self, steps: Sequence[Step], cursor: str | None) -> None:
        self.batches.append(([s.planned.source_id for s in steps], cursor))


def steps(planner: Planner, *ids: str) -> list[Step]:
    return planner.plan_page([person(i) for i in ids], {}).steps


def test_a_cursor_waits_until_its_page_is_recorded(planner: Planner) -> None:
    written = Recorder()
    batches = Batches(written, size=2)
    batches.add(steps(planner, "a", "b", "c"))  # page 1: one full batch goes out
    batches.mark("c1")
    batches.add(steps(planner, "d"))  # page 2 fills the second batch, which covers page 1
    batches.finish("c2")
    assert written.batches == [(["a", "b"], None), (["c", "d"], "c1"), ([], "c2")]


def test_the_last_cursor_goes_with_the_last_batch(planner: Planner) -> None:
    written = Recorder()
    batches = Batches(written, size=10)
    batches.add(steps(planner, "a", "b"))
    batches.finish("c1")
    assert written.batches == [(["a", "b"], "c1")]


def test_an_unchanged_cursor_is_not_stored_again(planner: Planner) -> None:
    written = Recorder()
    Batches(written, size=10, saved="c0").finish("c0")
    Batches(written, size=10, saved="c0").finish(None)
    assert written.batches == []
    Batches(written, size=10, saved="c0").finish("c1")
    assert written.batches == [([], "c1")]


@pytest.mark.parametrize("source_id", ["p1", "", "Zoë 😀", "a\0b", "x" * 300])
def test_legacy_target_keys_are_uuid5_of_job_and_source_id(source_id: str) -> None:
    expected = uuid.uuid5(KEY_NAMESPACE, f"job\0{source_id}")
    assert legacy_target_key("job", source_id) == str(expected)


def test_ids_with_undecodable_bytes_still_get_a_key() -> None:
    assert target_key("job", "bad\udcff", SECRET) != target_key("job", "bad", SECRET)


def test_a_record_merged_at_the_source_is_taken_back_as_merged(planner: Planner) -> None:
    known = {"p1": mapped_as(planner, person("p1"))}
    merged = person("p1", deleted=True, merged_into="p9")
    (step,) = planner.plan_page([merged], known).steps
    assert step.applied.reason == "merged-at-source:p9"
    (trashed,) = planner.plan_page([person("p1", deleted=True)], known).steps
    assert trashed.applied.reason == DELETED_AT_SOURCE


def test_every_step_carries_the_record_it_was_planned_from(policy: CompiledPolicy) -> None:
    """The runner scrubs a failed step's error of these values: shares, deletes, cleanups."""
    planner = Planner("job", policy, keys=KEYS)
    legacy = Planner("job", policy, keys=KEYS, cleanup=True)
    shared, gone, unrecorded = person("p1"), person("p2", region="South"), person("p3", consent={})
    known = {
        "p2": mapped_as(planner, person("p2")),
        "p3": dataclasses.replace(mapped_as(planner, person("p3")), recorded=False),
    }
    steps = planner.plan_page([shared, gone, unrecorded], known).steps
    steps += legacy.plan_page([person("p4", region="South")], {}).steps
    assert [(s.source or {}).get("id") for s in steps] == ["p1", "p2", "p3", "p4"]
    assert [s.source for s in steps[:3]] == [shared, gone, unrecorded]
    assert all(s.source is r for s, r in zip(steps, [shared, gone, unrecorded], strict=False))
    assert [(s.cleanup, s.withdrawal) for s in steps] == [
        (False, False),
        (False, False),
        (True, False),
        (True, False),
    ]


# What a projection may hold: text with or without control characters, numbers, booleans,
# None, lists and mappings (consent shown by name).
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)


@given(st.dictionaries(st.text(max_size=8), _values, max_size=5))
def test_a_projection_loses_exactly_what_strip_controls_deep_removes(
    projection: dict[str, Any],
) -> None:
    cleaned = _without_controls(projection)
    assert cleaned == strip_controls_deep(projection)
    assert list(cleaned) == list(strip_controls_deep(projection))
    assert cleaned is not projection  # a new dict, as before: a target may keep what it gets
