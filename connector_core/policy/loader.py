"""Load a policy file and check it against the language, the network and what it narrows.

:func:`load_policy` reports every problem of a file at once, each as ``path:line:col:
message`` (with "did you mean" where a name is misspelled), and returns a
:class:`~connector_core.policy.models.Policy` whose ``warnings`` hold what is legal but
probably not meant (a rule that can never match, a field that stays absent). It loads the
``narrows:`` chain too, with the network floor at its root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from connector_core.errors import ConfigValidationError, PolicyError, Problem
from connector_core.hookspecs import MaskFactory
from connector_core.masks import BUILTIN_MASKS
from connector_core.partners import PartnerRow, param_column, substitute
from connector_core.policy.conditions import ConditionParser, warning
from connector_core.policy.models import NAME_RE, Policy, PolicyFile, Rule
from connector_core.policy.outcomes import OutcomeParser
from connector_core.policy.reads import check_reads
from connector_core.records import consent_purpose
from connector_core.yaml_errors import (
    LocatedDocument,
    did_you_mean,
    load_yaml,
    sorted_problems,
    validate,
)

HINT = "Fix the lines above; `connector schema policy` gives your editor the policy language."


class PolicyValidationError(ConfigValidationError, PolicyError):
    """A policy file, or one it narrows, has problems; ``problems`` holds them in file order."""


@dataclasses.dataclass(frozen=True)
class _Options:
    purposes: list[str] | None
    masks: Mapping[str, MaskFactory]
    extra_fields: frozenset[str] | None
    floor: Path | None
    partner: PartnerRow | None = None
    #: what earlier loads of the same files found (see :class:`PolicyMemo`)
    memo: PolicyMemo | None = dataclasses.field(default=None, compare=False)


class PolicyMemo:
    """What loading a policy finds that a partner's values cannot change, kept for the
    other partners of the same template in one load of connector.yaml: the policies it
    narrows (the network floor...), and its ``fields:`` checked against them (a partner's
    value appears only in rule conditions). The files must not change while it is in use:
    make one per load."""

    def __init__(self) -> None:
        #: (policy file, the chain loading it) -> the policy, or the problems it raised
        self.parents: dict[tuple[Path, tuple[Path, ...]], Policy | ConfigValidationError] = {}
        #: (policy file, its parent) -> fields, classes, problems, warnings (the parent is
        #: kept in `parents`, so its id is not reused while the memo lives)
        self.outcomes: dict[tuple[Path, int], tuple[Any, Any, list[Problem], list[Problem]]] = {}
        #: for compile_policy: the fields' resolutions, by the chain's fields and classes
        self.resolutions: dict[Any, Any] = {}
        #: each file read once: its document, its real path, the hash of its bytes
        self.documents: dict[Path, LocatedDocument] = {}
        self.resolved: dict[Path, Path] = {}
        self.digests: dict[Path, hashlib._Hash] = {}
        #: for check_reads: why the policies a parent narrows refuse a read (None: they do
        #: not), by (id of the parent, kept in `parents`; field; for a mask; operators)
        self.refusals: dict[tuple[int, str, bool, tuple[str, ...]], str | None] = {}


def _document(path: Path, memo: PolicyMemo | None) -> LocatedDocument:
    """The policy file at `path` (read once per memo)."""
    if memo is None:
        return load_yaml(path)
    found = memo.documents.get(path)
    if found is None:
        found = memo.documents[path] = load_yaml(path)
    return found


def _resolved(path: Path, memo: PolicyMemo | None) -> Path:
    """`path` made absolute, links resolved (once per memo)."""
    if memo is None:
        return path.resolve()
    found = memo.resolved.get(path)
    if found is None:
        found = memo.resolved[path] = path.resolve()
    return found


def _file_digest(path: Path, memo: PolicyMemo | None) -> hashlib._Hash:
    """A sha256 of the bytes of the file at `path` (read once per memo), to update."""
    found = None if memo is None else memo.digests.get(path)
    if found is None:
        found = hashlib.sha256(path.read_bytes())
        if memo is not None:
            memo.digests[path] = found
    return found.copy()


def load_policy(
    path: Path,
    *,
    purposes: Collection[str] | None = None,
    masks: Mapping[str, MaskFactory] | None = None,
    extra_fields: Collection[str] | None = None,
    floor: Path | None = None,
    partner: PartnerRow | None = None,
    memo: PolicyMemo | None = None,
) -> Policy:
    """Load and check the policy at `path`, with the policies it narrows.

    Args:
        path: the policy file.
        purposes: the consent purposes connector.yaml declares; None when there is no
            connector.yaml, and then purposes are not checked.
        masks: the installed masks by name; None for the built-in ones.
        extra_fields: the ``extra.<adapter>.<name>`` fields the connections map; None
            accepts any well-formed one.
        floor: the network floor policy; it becomes the root of every ``narrows`` chain
            (the floor itself narrows nothing).
        partner: the registry row of a partner job: each ``{partner: COLUMN}`` operand in
            the policy's conditions becomes the row's typed value (not in the policies it
            narrows); its content hash covers the values used.
        memo: what loading other partners' policies from the same files found (pass
            one :class:`PolicyMemo` for the partners of one load).

    Raises:
        PolicyValidationError: every error of the file and of the files it narrows.
    """
    options = _Options(
        purposes=None if purposes is None else sorted(purposes),
        masks=BUILTIN_MASKS if masks is None else masks,
        extra_fields=None if extra_fields is None else frozenset(extra_fields),
        floor=floor,
        partner=partner,
        memo=memo,
    )
    return _load(path, options, ())


def _load(path: Path, options: _Options, stack: tuple[Path, ...]) -> Policy:
    try:
        doc = _document(path, options.memo)
    except ConfigValidationError as err:
        raise PolicyValidationError(err.problems, hint=err.hint) from None
    problems: list[Problem] = []
    params: dict[str, Any] = {}
    original = doc
    if not stack:
        doc = _with_partner(doc, options.partner, problems, params)
    parent = _parent(doc, options, (*stack, _resolved(path, options.memo)), problems)
    checker = _Checker(doc, options, parent, params)
    policy = checker.run()
    problems += checker.problems
    if problems or policy is None:
        if not stack and options.partner is not None:
            problems = _relocated(original, options.partner, problems)
        raise PolicyValidationError(sorted_problems(problems), hint=HINT)
    return policy


def _relocated(doc: LocatedDocument, partner: PartnerRow, problems: list[Problem]) -> list[Problem]:
    """Problems about a partner's value, moved to where the registry holds it."""
    marks: dict[tuple[int, int], str] = {}
    for loc in doc.marks:
        if loc[-1:] == ("partner",) and len(loc) > 1:
            parent = doc.marks.get(loc[:-1])
            if parent is not None:
                marks[parent] = str(doc.get(loc))
    out = []
    for problem in problems:
        column = marks.get((problem.line or 0, problem.col or 0))
        cell = partner.cells.get(column) if column is not None else None
        if cell is None or problem.path != str(doc.path):
            out.append(problem)
            continue
        out.append(
            cell.problem(
                f"partner {partner.name!r}, column {column!r}: not a valid value for "
                f"{doc.path.name}:{problem.line}: {problem.message}"
            )
        )
    return out


def _parent(
    doc: LocatedDocument, options: _Options, stack: tuple[Path, ...], problems: list[Problem]
) -> Policy | None:
    """Load the policy `doc` narrows: its ``narrows:`` file, else the network floor."""
    narrows = doc.get(("narrows",))
    if isinstance(narrows, str):
        target = Path(os.path.normpath(doc.path.parent / narrows))
        if not target.is_file():
            problems.append(
                doc.problem(
                    ("narrows",),
                    f"narrows: policy file {target} not found "
                    "(the path is relative to this file's folder)",
                )
            )
            return None
    elif options.floor is not None and stack[-1] != _resolved(options.floor, options.memo):
        target = options.floor
    else:
        return None
    real = _resolved(target, options.memo)
    if real in stack:
        cycle = [p.name for p in stack[stack.index(real) :]] + [target.name]
        problems.append(
            doc.problem(
                ("narrows",),
                "narrows: the policies form a cycle ("
                f"{' -> '.join(cycle)}); a policy cannot narrow itself",
            )
        )
        return None
    memo = options.memo
    key = (real, stack)
    found = None if memo is None else memo.parents.get(key)
    if found is None:
        try:
            found = _load(target, options, stack)
        except ConfigValidationError as err:
            found = err
        if memo is not None:
            memo.parents[key] = found
    if isinstance(found, ConfigValidationError):
        problems.extend(found.problems)
        return None
    return found


class _Checker:
    """Checks one policy file and builds its Policy; the parent chain is already loaded."""

    def __init__(
        self,
        doc: LocatedDocument,
        options: _Options,
        parent: Policy | None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.doc = doc
        self.params = dict(params or {})
        self.options = options
        self.parent = parent
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def run(self) -> Policy | None:
        """The checked policy, or None when there were errors (in ``problems``)."""
        model = self._structure()
        require = self._require_consent()
        rules = self._rules(require)
        fields, classes, problems, warnings = self._outcomes()
        if self.parent is not None:
            memo = self.options.memo
            self.problems += check_reads(
                self.doc,
                fields,
                classes,
                self.parent,
                self.options.masks,
                refusals=None if memo is None else memo.refusals,
            )
        self.problems += problems
        self.warnings += warnings
        self._policy_warnings(rules, require)
        if model is None or self.problems:
            return None
        return Policy(
            name=model.policy,
            path=self.doc.path,
            description=model.description,
            require_consent=tuple(model.require_consent),
            rules=tuple(rules),
            fields=fields,
            classes=classes,
            approval=model.approval,
            content_hash=self._content_hash(),
            narrows=self.parent,
            warnings=tuple(sorted_problems(self.warnings)),
        )

    def _outcomes(self) -> tuple[Any, Any, list[Problem], list[Problem]]:
        """The ``fields:`` block parsed and checked against the policies it narrows: fields,
        classes, problems and warnings (from the memo for a file already checked against
        the same parent)."""
        memo = self.options.memo
        key = (_resolved(self.doc.path, memo), id(self.parent))
        found = None if memo is None else memo.outcomes.get(key)
        if found is None:
            outcomes = OutcomeParser(
                self.doc, masks=self.options.masks, extra_fields=self.options.extra_fields
            )
            fields, classes = outcomes.parse()
            if self.parent is not None:
                outcomes.check_chain(fields, classes, self.parent)
            found = (fields, classes, outcomes.problems, outcomes.warnings)
            if memo is not None:
                memo.outcomes[key] = found
        fields, classes, problems, warnings = found
        return fields, classes, list(problems), list(warnings)

    def _structure(self) -> PolicyFile | None:
        """Validate the structure with pydantic, after the checks it would word poorly."""
        data = dict(self.doc.data)
        raw_fields = data.get("fields")
        if isinstance(raw_fields, dict) and None in raw_fields.values():
            # `phone: null` names the null mask; pydantic would only see an empty value.
            data["fields"] = {k: "null" if v is None else v for k, v in raw_fields.items()}
        name = data.get("policy")
        if isinstance(name, str) and not re.match(NAME_RE, name):
            slug = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-_") or "my-policy"
            message = f"policy: {name!r} is not a policy name; use lowercase letters, digits, "
            message += f"'-' and '_', e.g. {slug if slug[0].isalpha() else 'p-' + slug}"
            self.problems.append(self.doc.problem(("policy",), message))
            data["policy"] = "checked-above"
        doc = LocatedDocument(self.doc.path, data, self.doc.marks, self.doc.key_marks)
        try:
            return validate(doc, PolicyFile)
        except ConfigValidationError as err:
            self.problems += err.problems
            return None

    def _require_consent(self) -> list[str]:
        raw = self.doc.get(("require_consent",))
        purposes = [p for p in raw if isinstance(p, str)] if isinstance(raw, list) else []
        known = self.options.purposes
        for i, purpose in enumerate(purposes):
            loc = ("require_consent", i)
            if consent_purpose(f"consent.{purpose}") is None:
                message = "is not a purpose name (lowercase letters, digits and '_')"
            elif known is not None and purpose not in known:
                suggestion = did_you_mean(purpose, known) or (
                    f"; declared purposes: {', '.join(known) or 'none'}"
                )
                message = f"is not declared in connector.yaml{suggestion}"
            else:
                continue
            self.problems.append(
                self.doc.problem(loc, f"require_consent: consent purpose {purpose!r} {message}")
            )
        return purposes

    def _rules(self, require: list[str]) -> list[Rule]:
        parser = ConditionParser(
            self.doc,
            purposes=self.options.purposes,
            extra_fields=self.options.extra_fields,
            require_consent=require,
        )
        raw = self.doc.get(("rules",))
        rules: list[Rule] = []
        first_line: dict[str, int | None] = {}
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            rule = self._rule(i, item, parser, first_line)
            if rule is not None:
                rules.append(rule)
        self.problems += parser.problems
        self.warnings += parser.warnings
        return rules

    def _rule(
        self, i: int, item: Any, parser: ConditionParser, first_line: dict[str, int | None]
    ) -> Rule | None:
        if not isinstance(item, dict):
            return None  # the structure check reports it
        kind = "allow" if "allow" in item else "forbid"
        name = item.get(kind)
        loc = ("rules", i, kind)
        line = (self.doc.locate(("rules", i)) or (None, None))[0]
        if not isinstance(name, str):
            name = f"rules[{i}]"
        elif not name.strip():
            self.problems.append(
                self.doc.problem(
                    loc,
                    "a rule needs a name that says why it "
                    "exists, e.g. `allow: members in the North`",
                )
            )
        elif name in first_line:
            self.problems.append(
                self.doc.problem(
                    loc,
                    f"duplicate rule name {name!r} (first "
                    f"used on line {first_line[name]}); explain "
                    "and reports tell rules apart by name",
                )
            )
        else:
            first_line[name] = line
        when = item.get("when")
        condition = None
        if isinstance(when, dict):
            condition = parser.parse(when, ("rules", i, "when"), rule=name)
        description = item.get("description")
        kind_ = cast(Literal["allow", "forbid"], kind)
        return Rule(
            kind_, name, condition, line, description if isinstance(description, str) else ""
        )

    def _policy_warnings(self, rules: list[Rule], require: list[str]) -> None:
        if not any(rule.kind == "allow" for rule in rules) and not self.problems:
            at = ("rules",) if "rules" in self.doc.data else ("policy",)
            self._warn(at, "this policy shares nothing: it has no allow rule (default deny)")
        inherited = self.parent is not None and any(p.require_consent for p in self.parent.chain())
        if not require and not inherited:
            at = ("require_consent",) if "require_consent" in self.doc.data else ("policy",)
            self._warn(
                at,
                "require_consent is empty: this policy shares without any consent "
                "check; is that intended?",
            )

    def _warn(self, loc: tuple[str, ...], message: str) -> None:
        self.warnings.append(warning(self.doc, loc, message, key=True))

    def _content_hash(self) -> str:
        digest = _file_digest(self.doc.path, self.options.memo)
        if self.params:  # a partner's values: another value, another policy
            digest.update(b"\0partner\0" + repr(sorted(self.params.items())).encode())
        if self.parent is not None:
            digest.update(b"\0narrows\0" + self.parent.content_hash.encode())
        return digest.hexdigest()


def _with_partner(
    doc: LocatedDocument,
    partner: PartnerRow | None,
    problems: list[Problem],
    params: dict[str, Any],
) -> LocatedDocument:
    """`doc` with its conditions' ``{partner: COLUMN}`` operands replaced by the partner's
    typed values (parsed YAML in, parsed YAML out: a value is never read as YAML again)."""
    rules = doc.get(("rules",))
    if not isinstance(rules, list):
        return doc
    data = dict(doc.data)
    data["rules"] = new_rules = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or "when" not in rule:
            new_rules.append(rule)
            continue
        if partner is None:
            problems += _unfilled(doc, rule["when"], ("rules", i, "when"))
            new_rules.append(rule)
            continue
        used_at = f"{doc.path.name} rules[{i}]"
        when = substitute(rule["when"], partner, used_at, problems, params)
        new_rules.append({**rule, "when": when})
    return LocatedDocument(doc.path, data, doc.marks, doc.key_marks)


def _unfilled(doc: LocatedDocument, node: Any, loc: tuple[str | int, ...]) -> list[Problem]:
    """``{partner: COLUMN}`` in a policy loaded for no partner."""
    if param_column(node) is not None:
        message = (
            "{partner: ...} is a partner's value: this policy is a job template's, filled in "
            "for each partner of its registry (connector.yaml `partners:`); check it through "
            "a partner's job, e.g. `connector plan TEMPLATE.PARTNER`"
        )
        return [doc.problem(loc, message)]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _unfilled(doc, v, (*loc, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _unfilled(doc, v, (*loc, i))]
    return []
