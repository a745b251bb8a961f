"""The ``fields:`` block of a policy: outcomes per field and classification, and their checks.

An entry's key is a canonical field, an ``extra.<adapter>.<name>`` field or a classification
prefix (``pii.location``); its value is ``show``, ``absent``, ``forbid``, a mask name, or a
one-key mapping ``{mask: parameter}``. Within one policy a field entry beats a classification
entry and a longer prefix beats a shorter one; ``forbid`` binds every more specific entry of
the same policy and every policy that narrows it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from connector_core.errors import Problem
from connector_core.hookspecs import MaskFactory
from connector_core.masks import MaskContext
from connector_core.policy.conditions import warning
from connector_core.policy.models import FieldOutcome, Policy
from connector_core.policy.schema import KEYWORD_OUTCOMES, known_classifications
from connector_core.records import FIELDS, is_extra
from connector_core.yaml_errors import Loc, LocatedDocument, did_you_mean

Outcomes = dict[str, FieldOutcome]


def covers(prefix: str, classification: str) -> bool:
    """True when `classification` is `prefix` or below it (``pii`` covers ``pii.name``)."""
    return classification == prefix or classification.startswith(prefix + ".")


def effective(policy_fields: Outcomes, classes: Outcomes, field: str) -> str | None:
    """The key (field or classification) deciding `field` in one policy; None if unlisted."""
    if field in policy_fields:
        return field
    known = FIELDS.get(field)
    if known is None:
        return None
    prefixes = [c for c in classes if covers(c, known.classification)]
    return max(prefixes, key=len) if prefixes else None


class OutcomeParser:
    """Parses the ``fields:`` block of one policy file, collecting problems and warnings."""

    def __init__(
        self,
        doc: LocatedDocument,
        *,
        masks: Mapping[str, MaskFactory],
        extra_fields: Collection[str] | None,
    ) -> None:
        self.doc = doc
        self.masks = masks
        self.extra_fields = extra_fields
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self._classes = known_classifications()

    def parse(self) -> tuple[Outcomes, Outcomes]:
        """The field entries and the classification entries, each key -> outcome."""
        fields: Outcomes = {}
        classes: Outcomes = {}
        raw = self.doc.get(("fields",))
        for key, value in (raw if isinstance(raw, dict) else {}).items():
            kind = self._key_kind(key)
            outcome = self._outcome(key, value)
            if kind and outcome:
                (fields if kind == "field" else classes)[key] = outcome
        self._check_class_forbids(fields, classes)
        return fields, classes

    def _error(self, loc: Loc, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(loc, message, key=key))

    def _key_kind(self, key: str) -> str | None:
        loc = ("fields", key)
        if key in FIELDS:
            return "field"
        if is_extra(key):
            if self.extra_fields is None or key in self.extra_fields:
                return "field"
            suggestion = did_you_mean(key, self.extra_fields) or "; no connection maps it"
            self._error(loc, f"fields: unknown custom field {key!r}{suggestion}", key=True)
            return None
        if key in self._classes:
            return "class"
        suggestion = did_you_mean(key, [*FIELDS, *self._classes])
        if key.split(".")[0] in self._classes:
            message = f"classification {key!r} matches no canonical field"
            suggestion = suggestion or f"; classifications: {', '.join(self._classes)}"
        else:
            message = f"unknown field or classification {key!r}"
            suggestion = suggestion or (
                "; use a canonical field, a classification such as pii.location, "
                "or extra.<adapter>.<name>"
            )
        self._error(loc, f"fields: {message}{suggestion}", key=True)
        return None

    def _outcome(self, key: str, value: Any) -> FieldOutcome | None:
        loc = ("fields", key)
        line = (self.doc.locate(loc, key=True) or (None, None))[0]
        if value is None and "null" in self.masks:
            value = "null"  # YAML reads an unquoted `null` as nothing: it names the null mask
        if isinstance(value, str):
            if value in KEYWORD_OUTCOMES:
                return FieldOutcome(value, line=line)  # type: ignore[arg-type]
            return self._mask(key, value, None, loc, line)
        if isinstance(value, dict):
            if len(value) != 1:
                self._error(
                    loc,
                    f"fields.{key}: a mask with a parameter is one `mask: "
                    "parameter` pair, e.g. {truncate: 3}",
                )
                return None
            ((name, param),) = value.items()
            if name in KEYWORD_OUTCOMES:
                self._error(
                    (*loc, name),
                    f"fields.{key}: {name} takes no parameter; write `{key}: {name}`",
                    key=True,
                )
                return None
            return self._mask(key, name, param, (*loc, name), line)
        return None  # the structure check reports other types

    def _mask(
        self, key: str, name: str, param: Any, loc: Loc, line: int | None
    ) -> FieldOutcome | None:
        factory = self.masks.get(name)
        if factory is None:
            choices = [*KEYWORD_OUTCOMES, *self.masks]
            suggestion = did_you_mean(name, choices) or f"; write one of {', '.join(choices)}"
            self._error(
                loc, f"fields.{key}: unknown mask {name!r}{suggestion}", key=param is not None
            )
            return None
        try:
            factory(param, MaskContext.for_validation())
        except (ValueError, TypeError) as exc:
            # A plugin's factory may trip over a wrong parameter type: that is the admin's to fix.
            if param is None:
                fix = f"write `{key}: {{{name}: PARAMETER}}`"
                self._error(loc, f"fields.{key}: the {name} mask needs a parameter; {fix} ({exc})")
            else:
                self._error(loc, f"fields.{key}: {exc}")
            return None
        return FieldOutcome("mask", name, param, line)

    def _check_class_forbids(self, fields: Outcomes, classes: Outcomes) -> None:
        """A forbid on a classification binds its fields: none of them may be shown here."""
        for prefix, outcome in classes.items():
            if outcome.kind != "forbid":
                continue
            inside = [k for k in classes if k != prefix and covers(prefix, k)]
            inside += [
                k for k in fields if k in FIELDS and covers(prefix, FIELDS[k].classification)
            ]
            for key in inside:
                shown = (fields.get(key) or classes[key]).kind
                if shown in ("show", "mask"):
                    verb = "shown" if shown == "show" else "masked"
                    self._error(
                        ("fields", key),
                        f"fields: {key} is {verb} here, but {prefix} "
                        f"(line {outcome.line}) forbids it, and forbid binds every field "
                        f"of the classification; use `{prefix}: absent` to allow "
                        "exceptions",
                        key=True,
                    )

    def check_chain(self, fields: Outcomes, classes: Outcomes, parent: Policy) -> None:
        """Compare this policy's shown fields with every policy it narrows."""
        for key, covered in _shown_entries(fields, classes):
            for ancestor in parent.chain():
                if self._check_against(key, covered, ancestor, fields, classes):
                    break

    def _check_against(
        self, key: str, covered: list[str], ancestor: Policy, fields: Outcomes, classes: Outcomes
    ) -> bool:
        loc = ("fields", key)
        forbidders = [_forbidder(ancestor, f) for f in covered]
        if all(forbidders):
            by, line = forbidders[0] or ("", None)
            what = "it" if key in fields else "all its fields"
            self._error(
                loc,
                f"fields: {key} cannot be shown or masked: {ancestor.path}:{line} "
                f"forbids {what} ({by}: forbid), and this policy narrows it",
                key=True,
            )
            return True
        deciders = [effective(ancestor.fields, ancestor.classes, f) for f in covered]
        outcomes = [_outcome_of(ancestor, d) for d in deciders]
        first = outcomes[0]
        if all(o is None or o.kind in ("absent", "forbid") for o in outcomes):
            if key not in fields:
                why = "shares none of its fields"
            elif first is None:
                why = "does not list it"
            else:
                why = f"makes it absent (line {first.line})"
            self._warn(
                loc,
                f"fields: {key} stays absent: {ancestor.path} {why}, and this policy narrows it",
            )
            return True
        mine = fields.get(key) or classes[key]
        if mine.kind == "show" and all(o is not None and o.kind == "mask" for o in outcomes):
            label = first.label().removeprefix("mask:") if first else ""
            self._warn(
                loc,
                f"fields: {key} stays masked: {ancestor.path} masks it (line "
                f"{first.line if first else None}: {label}), and this policy narrows it",
            )
            return True
        return False

    def _warn(self, loc: Loc, message: str) -> None:
        self.warnings.append(warning(self.doc, loc, message, key=True))


def _shown_entries(fields: Outcomes, classes: Outcomes) -> Iterator[tuple[str, list[str]]]:
    """Each shown or masked entry with the fields it decides (a more specific entry wins)."""
    for key, outcome in fields.items():
        if outcome.kind in ("show", "mask"):
            yield key, [key]
    for prefix, outcome in classes.items():
        if outcome.kind in ("show", "mask"):
            decided = [f for f in FIELDS if effective(fields, classes, f) == prefix]
            if decided:
                yield prefix, decided


def _forbidder(policy: Policy, field: str) -> tuple[str, int | None] | None:
    """The entry of `policy` that forbids `field` (by name or classification), if any."""
    outcome = policy.fields.get(field)
    if outcome is not None and outcome.kind == "forbid":
        return field, outcome.line
    known = FIELDS.get(field)
    for prefix, outcome in policy.classes.items():
        if outcome.kind == "forbid" and known and covers(prefix, known.classification):
            return prefix, outcome.line
    return None


def _outcome_of(policy: Policy, key: str | None) -> FieldOutcome | None:
    if key is None:
        return None
    return policy.fields.get(key) or policy.classes.get(key)
