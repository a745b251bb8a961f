"""The floor is a ceiling for reads too: random floor/chapter pairs through the loader.

No chapter that loads reads — with a mask or in a rule — a field the floor does not let it
read; and a chapter is refused for its reads only when it reads such a field.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector_core.errors import Problem
from connector_core.masks import BUILTIN_MASKS, MaskContext, MaskFunction
from connector_core.policy.loader import PolicyMemo, PolicyValidationError, load_policy
from connector_core.records import FIELDS, Record

FIELD_NAMES = ("city", "region", "street_address", "email", "groups", "latitude", "is_deceased")
TWO = frozenset({"street_address", "email"})


def reads_two(param: Any, context: MaskContext) -> MaskFunction:
    """A plugin-style mask declaring that it reads two other fields."""

    def mask(value: Any, record: Record) -> Any:
        return None if value is None else f"{record.get('street_address')}/{record.get('email')}"

    mask.reads = TWO  # type: ignore[attr-defined]
    return mask


MASKS = {**BUILTIN_MASKS, "reads_two": reads_two}
MASK_READS = {"city_only": frozenset({"city"}), "reads_two": TWO}
OUTCOMES = st.sampled_from(["show", "absent", "forbid", "last4", "city_only"])
CHAPTER_OUTCOMES = st.sampled_from(["show", "absent", "city_only", "reads_two", "initial"])
VALUES = {"groups": ["x"], "latitude": 1, "is_deceased": True}


def _test(field: str, op: str) -> dict[str, Any]:
    if op == "exists":
        return {field: {"exists": True}}
    return {field: {"any_of" if field == "groups" else "eq": VALUES.get(field, "x")}}


floors = st.fixed_dictionaries(
    {
        "fields": st.dictionaries(st.sampled_from(FIELD_NAMES), OUTCOMES, max_size=5),
        "location": st.sampled_from([None, "show", "absent", "forbid"]),
        "tests": st.lists(st.sampled_from(FIELD_NAMES), max_size=2, unique=True),
    }
)
chapters = st.fixed_dictionaries(
    {
        "fields": st.dictionaries(st.sampled_from(FIELD_NAMES), CHAPTER_OUTCOMES, max_size=3),
        "tests": st.lists(
            st.tuples(st.sampled_from(FIELD_NAMES), st.sampled_from(["exists", "eq"])),
            max_size=3,
        ),
    }
)


def _floor_outcome(floor: dict[str, Any], field: str) -> tuple[str | None, bool]:
    """The floor's outcome for `field` and whether it was written by field name."""
    own = floor["fields"].get(field)
    covered = FIELDS[field].classification.startswith("pii.location")
    by_class = floor["location"] if covered else None
    if own == "forbid" or (by_class == "forbid"):
        return "forbid", own == "forbid"
    if own is not None:
        return own, True
    return by_class, False


def _may_read(floor: dict[str, Any], field: str, *, for_mask: bool, op: str = "eq") -> bool:
    """The rule of docs/policies.md, written out independently of the engine."""
    outcome, named = _floor_outcome(floor, field)
    if outcome == "forbid":
        return False
    if outcome == "show":
        return True
    if for_mask:
        return False
    tested = field in floor["tests"]
    if outcome in ("last4", "city_only"):
        return op == "exists"  # masked: its presence only, whatever the floor tests
    return tested or (outcome == "absent" and named)


def _load_problems(path: Path, floor: Path, memo: PolicyMemo | None = None) -> list[Problem]:
    try:
        load_policy(path, masks=MASKS, floor=floor, memo=memo)
    except PolicyValidationError as err:
        return list(err.problems)
    return []


def _write(folder: Path, floor: dict[str, Any], chapter: dict[str, Any]) -> Path:
    floor_fields: dict[str, Any] = dict(floor["fields"])
    if floor["location"] is not None:
        floor_fields["pii.location"] = floor["location"]
    floor_rules: list[dict[str, Any]] = [{"allow": "everyone"}]
    floor_rules += [{"forbid": f"no {f}", "when": _test(f, "exists")} for f in floor["tests"]]
    chapter_rules: list[dict[str, Any]] = [{"allow": "everyone"}]
    chapter_rules += [
        {"allow": f"{f} {op} {i}", "when": _test(f, op)}
        for i, (f, op) in enumerate(chapter["tests"])
    ]
    documents = {
        "floor.yaml": {"policy": "floor", "rules": floor_rules, "fields": floor_fields},
        "chapter.yaml": {"policy": "chapter", "rules": chapter_rules, "fields": chapter["fields"]},
    }
    for name, document in documents.items():
        (folder / name).write_text(yaml.safe_dump(document, sort_keys=False))
    return folder / "chapter.yaml"


@settings(max_examples=150, deadline=None)
@given(floor=floors, chapter=chapters)
@example(  # the observed leak: the floor forbids city, the chapter ships it under region
    floor={"fields": {"city": "forbid", "region": "show"}, "location": None, "tests": []},
    chapter={"fields": {"region": "city_only"}, "tests": []},
)
@example(  # the observed oracle: a rule on the floor-forbidden street address
    floor={"fields": {"street_address": "forbid"}, "location": None, "tests": []},
    chapter={"fields": {}, "tests": [("street_address", "eq")]},
)
@example(  # a value test on a field the floor shows only masked
    floor={"fields": {"email": "last4"}, "location": None, "tests": []},
    chapter={"fields": {}, "tests": [("email", "eq")]},
)
@example(  # ... which the floor itself tests, if only with `exists`: still only masked
    floor={"fields": {"email": "last4"}, "location": None, "tests": ["email"]},
    chapter={"fields": {}, "tests": [("email", "eq")]},
)
def test_no_loaded_chapter_reads_what_the_floor_keeps_back(
    floor: dict[str, Any], chapter: dict[str, Any]
) -> None:
    reads = [r for o in chapter["fields"].values() for r in MASK_READS.get(o, ())]
    allowed = all(_may_read(floor, r, for_mask=True) for r in reads) and all(
        _may_read(floor, f, for_mask=False, op=op) for f, op in chapter["tests"]
    )
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), floor, chapter)
        problems = _load_problems(path, Path(folder) / "floor.yaml")
        # as the partners of a template load: the floor's answers kept in a memo, reused
        memo = PolicyMemo()
        for _ in range(2):
            again = _load_problems(path, Path(folder) / "floor.yaml", memo)
            assert [str(p) for p in again] == [str(p) for p in problems]
    if any(p.path.endswith("floor.yaml") for p in problems):
        return  # a floor that does not load itself: nothing to narrow
    refused_for_reads = [
        p for p in problems if "mask reads" in p.message or "rule tests" in p.message
    ]
    assert bool(refused_for_reads) == (not allowed), problems
    assert all(f"{folder}/floor.yaml" in p.message for p in refused_for_reads)
    if problems:
        return
    assert allowed, (floor, chapter)
    forbidden = {f for f in FIELD_NAMES if _floor_outcome(floor, f)[0] == "forbid"}
    assert not forbidden & ({*reads} | {f for f, _ in chapter["tests"]})


@pytest.mark.parametrize(
    ("floor_entry", "test", "loads"),
    [
        ("latitude: {coarsen_location: 2}", "latitude: {exists: true}", True),
        ("latitude: {coarsen_location: 2}", "latitude: {gt: 53.8}", False),
        ("latitude: {coarsen_location: 2}\nalso_tests_latitude", "latitude: {gt: 53.8}", False),
        ("groups: absent", "groups: {any_of: [x]}", True),
        ("affiliation: absent", "groups: {any_of: [x]}", False),
        ("tags: show", "groups: {any_of: [x]}", False),
    ],
    ids=[
        "exists-on-masked",
        "value-on-masked",
        "value-on-masked-the-floor-tests",
        "absent-by-name",
        "absent-by-class",
        "unlisted",
    ],
)
def test_what_a_rule_may_test(tmp_path: Path, floor_entry: str, test: str, loads: bool) -> None:
    """A field the floor shows only masked may be tested for presence only, also when the
    floor's own rules test it (its `exists` selects people by presence, no more)."""
    entry, _, tests = floor_entry.partition("\nalso_tests_")
    rule = f"\n    when: {{{tests}: {{exists: true}}}}" if tests else ""
    (tmp_path / "floor.yaml").write_text(
        f"policy: floor\nrules:\n  - allow: all{rule}\nfields:\n  first_name: show\n  {entry}\n"
    )
    (tmp_path / "chapter.yaml").write_text(
        f"policy: chapter\nrules:\n  - allow: some\n    when: {{{test}}}\n"
        "fields: {first_name: show}\n"
    )
    problems = _load_problems(tmp_path / "chapter.yaml", tmp_path / "floor.yaml")
    if loads:
        assert not problems
    else:
        assert any(p.line == 4 and "rule tests" in p.message for p in problems), problems
