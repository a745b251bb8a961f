"""Policy tests: ``*_test.yaml`` files of fixture records with expected decisions and fields.

```yaml
policy: organizers-north.yaml      # relative to this file
floor: network-floor.yaml          # optional: the network floor it narrows
now: 2026-06-01T12:00:00+00:00     # optional fixed time for {days_ago: N} conditions
hash_key: test-only-key            # optional: key for the hash mask (fixtures, not a secret)
cases:
  - name: a consenting supporter in the North
    record: {id: "1", first_name: Ana, region: North, consent: {local_organizing: true}}
    expect:
      decision: share              # or withhold
      reason: consent:local_organizing   # optional, for withheld records
      fields: {first_name: Ana, street_address: absent}
      exact: false                 # true: no field beyond those listed may be shared
```
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from connector_core import records
from connector_core.consent import with_consent
from connector_core.errors import ConfigValidationError, ConnectorError, PolicyError
from connector_core.hookspecs import MaskFactory
from connector_core.masks import MaskContext
from connector_core.policy.compiler import CompiledPolicy, compile_policy
from connector_core.policy.loader import load_policy
from connector_core.records import FIELDS, FieldType, Record, ValueInvalid, coerce
from connector_core.yaml_errors import load_yaml, validate

ABSENT = "absent"


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expectation(_Block):
    """What a case expects."""

    decision: Literal["share", "withhold"] = Field(description="share or withhold")
    reason: str | None = Field(None, description="Expected reason, e.g. consent:contact_me")
    fields: dict[str, Any] = Field(
        default_factory=dict, description="Expected shared values; `absent` for not shared"
    )
    exact: bool = Field(False, description="No field beyond those listed may be shared")


class Case(_Block):
    """One fixture record and what the policy must do with it."""

    name: str = Field(description="What this case shows, in words")
    record: dict[str, Any] = Field(description="A canonical record; consent: {purpose: true}")
    expect: Expectation


class PolicyTestFile(_Block):
    """A ``*_test.yaml`` file."""

    policy: str = Field(description="The policy file under test, relative to this file")
    floor: str | None = Field(None, description="The network floor policy, if any")
    now: dt.datetime | None = Field(None, description="Fixed evaluation time")
    hash_key: str | None = Field(None, description="Hash mask key for these fixtures only")
    cases: list[Case] = Field(min_length=1, description="The cases")


@dataclasses.dataclass
class CaseResult:
    """The outcome of one case; ``differences`` is empty when it passed."""

    file: Path
    line: int | None
    name: str
    differences: list[str]

    @property
    def passed(self) -> bool:
        """True when the policy did what the case expects."""
        return not self.differences


def normalize_record(raw: Mapping[str, Any], source: str = "fixture") -> Record:
    """A record as a person wrote it, read as sync reads a source's records: its consent by
    the one consent parser (:func:`connector_core.consent.with_consent`: ``{purpose: yes}``
    or state mappings), and every other canonical field given as text (``is_deceased:
    "yes"``, ``birth_date: "1990-01-02"``) turned into the field's type by the converter
    the adapters use (:func:`connector_core.records.coerce`). ``policy preview``, policy
    tests and ``policy explain`` all read records here.

    Raises:
        ValueInvalid: a consent value that is neither yes, no nor empty
            (:class:`~connector_core.consent.AmbiguousConsent`), or a field whose text is
            not of its type; the message names the field, never the value.
    """
    record = with_consent(raw, source)
    for name, value in record.items():
        field = FIELDS.get(name)
        if field is None or name in ("id", "consent") or field.type is FieldType.STRING:
            continue
        if isinstance(value, str):
            record[name] = _coerced(field, value)
        elif isinstance(value, dt.date):  # YAML reads an unquoted 2024-05-01 as a date
            record[name] = _coerced(field, value.isoformat())
        elif field.type is FieldType.BOOLEAN and type(value) is int:
            record[name] = _coerced(field, str(value))  # 1 or 0, as JSON writes them
    return record


def _coerced(field: records.Field, text: str) -> Any:
    try:
        return coerce(field, text)
    except ValueInvalid as exc:
        raise ValueInvalid(exc.expected, field.name) from None


def find_test_files(paths: Iterable[Path]) -> list[Path]:
    """Every ``*_test.yaml`` under the given files and folders, sorted."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(path.rglob("*_test.yaml"))
        else:
            found.add(path)
    return sorted(found)


def fixed_key_context(key: str | None) -> MaskContext:
    """A mask context whose hash key is the test file's fixture key (or missing)."""
    if key is None:
        return MaskContext(hash_key=_no_key)
    return MaskContext(hash_key=lambda: key.encode())


def _no_key() -> bytes:
    raise PolicyError(
        "this test file uses the hash mask but sets no hash_key",
        hint="Add `hash_key: any-test-value` to the test file.",
    )


def run_test_file(
    path: Path,
    *,
    purposes: Iterable[str] | None = None,
    masks: Mapping[str, MaskFactory] | None = None,
) -> list[CaseResult]:
    """Load a test file and its policy, and check every case."""
    doc = load_yaml(path)
    spec = validate(doc, PolicyTestFile)
    base = path.parent
    policy = load_policy(
        base / spec.policy,
        purposes=None if purposes is None else list(purposes),
        masks=masks,
        floor=base / spec.floor if spec.floor else None,
    )
    compiled = compile_policy(
        policy, masks=masks, context=fixed_key_context(spec.hash_key), now=spec.now
    )
    return [
        CaseResult(
            path,
            (doc.locate(("cases", i)) or (None, None))[0],
            case.name,
            check_case(compiled, case),
        )
        for i, case in enumerate(spec.cases)
    ]


def check_case(compiled: CompiledPolicy, case: Case) -> list[str]:
    """Compare what the policy does with the record against the expectation."""
    try:
        record = normalize_record(case.record)
    except ValueInvalid as exc:  # a fixture says what it means: yes or no, a date…
        return [f"record: {exc}"]
    decision, projection = compiled.evaluate(record)
    expect = case.expect
    diffs: list[str] = []
    actual = "share" if decision.share else "withhold"
    if actual != expect.decision:
        diffs.append(f"decision: expected {expect.decision}, got {actual} ({decision.reason})")
    if expect.reason is not None and decision.reason != expect.reason:
        diffs.append(f"reason: expected {expect.reason}, got {decision.reason}")
    diffs.extend(_field_differences(expect, projection or {}))
    return diffs


def _field_differences(expect: Expectation, projection: Record) -> Iterator[str]:
    # An allowed field with no value shares nothing: it reads as absent.
    for field, wanted in expect.fields.items():
        got = projection.get(field)
        got = ABSENT if got is None else got
        if got != wanted:
            yield f"{field}: expected {wanted!r}, got {got!r}"
    if expect.exact:
        for field in sorted(set(projection) - set(expect.fields)):
            if projection[field] is not None:
                yield f"{field}: not expected, but shared as {projection[field]!r}"


#: The name of the result that stands for a test file (or its policy) that could not load.
LOADING = "(loading)"


def collect_results(files: Iterable[Path], **kwargs: Any) -> Iterator[CaseResult]:
    """Run every file; a file that fails to load becomes one failed result per problem,
    named :data:`LOADING` (a configuration error: ``policy test`` exits 3)."""
    for path in files:
        try:
            yield from run_test_file(path, **kwargs)
        except ConfigValidationError as err:
            for problem in err.problems:
                yield CaseResult(path, problem.line, LOADING, [str(problem)])
        except ConnectorError as err:
            yield CaseResult(path, None, LOADING, [str(err)])
