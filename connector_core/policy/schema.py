"""The JSON Schema of a policy file, so that editors autocomplete fields, operators and masks.

``# yaml-language-server: $schema=policy.schema.json`` at the top of a policy lets VS Code (and
any editor with the YAML language server) offer every canonical field, classification,
operator and installed mask, with its description. The loader's checks remain the authority:
the schema cannot know the network's purposes or which comparisons make sense together.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from connector_core.policy.models import NAME_RE, ApprovalModel
from connector_core.records import FIELDS, FieldType

JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
CONSENT_KEY_RE = r"^consent\.[a-z][a-z0-9_]*$"
EXTRA_KEY_RE = r"^extra\.[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"
KEYWORD_OUTCOMES = {
    "show": "Shared as it is",
    "absent": "Not shared",
    "forbid": "Not shared, and no policy narrowing this one can share it",
}

_OPERATOR_TEXT = {
    "eq": "Equals the value (null: the field is empty)",
    "ne": "Does not equal the value (null: the field has a value)",
    "in": "Is one of the values",
    "not_in": "Is none of the values",
    "any_of": "The list contains at least one of the values",
    "all_of": "The list contains every one of the values",
    "exists": "true: the field has a value; false: it is empty",
    "gt": "Greater than (later than, for dates)",
    "gte": "Greater than or equal to (on or after, for dates)",
    "lt": "Less than (earlier than, for dates)",
    "lte": "Less than or equal to (on or before, for dates)",
    "starts_with": "The text starts with this",
}
_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}", "description": "An ISO date"}
_TEST_NAMES = {
    FieldType.STRING: "TextTest",
    FieldType.INTEGER: "IntegerTest",
    FieldType.NUMBER: "NumberTest",
    FieldType.BOOLEAN: "BooleanTest",
    FieldType.DATE: "DateTest",
    FieldType.DATETIME: "DateTest",
    FieldType.LIST: "ListTest",
}


def known_classifications() -> list[str]:
    """Every classification of a canonical field and each of its prefixes, sorted.

    ``pii.location.coarse`` gives ``pii``, ``pii.location`` and ``pii.location.coarse``.
    """
    found: set[str] = set()
    for field in FIELDS.values():
        parts = field.classification.split(".")
        found.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return sorted(found)


def policy_json_schema(masks: Collection[str]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy file, offering the masks named `masks`."""
    return {
        "$schema": JSON_SCHEMA_DRAFT,
        "title": "Commons Connector policy",
        "description": "Which people a recipient may receive, which of their fields, and "
        "under which consent. Default deny; forbid beats allow.",
        "type": "object",
        "additionalProperties": False,
        "required": ["policy"],
        "properties": _top_level(),
        "$defs": {
            "Rule": _rule(),
            "Condition": _condition(),
            **_tests(),
            "RelativeTime": _relative_time(),
            "Fields": _fields(),
            "Outcome": _outcome(sorted(masks)),
            "Approval": _approval(),
        },
    }


def _ref(name: str, description: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}", "description": description}


def _strings(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", **extra}, "description": description}


def _top_level() -> dict[str, Any]:
    return {
        "policy": {
            "type": "string",
            "pattern": NAME_RE,
            "description": "The policy's name: lowercase letters, digits, '-' and '_'",
        },
        "description": {"type": "string", "description": "What this policy shares and why"},
        "narrows": {
            "type": "string",
            "description": "Path (relative to this file) of a policy this one can only "
            "narrow: both must allow a person, and each field gets the stricter outcome",
        },
        "require_consent": _strings(
            "Consent purposes every shared person needs, checked before any rule",
            pattern=r"^[a-z][a-z0-9_]*$",
        ),
        "rules": {
            "type": "array",
            "items": {"$ref": "#/$defs/Rule"},
            "description": "Allow and forbid rules; without an allow rule nothing is shared",
        },
        "fields": _ref("Fields", "What each field becomes; unlisted fields are not shared"),
        "approval": _ref("Approval", "Which changes wait for people to approve them"),
    }


def _rule() -> dict[str, Any]:
    name = {"type": "string", "minLength": 1}
    return {
        "type": "object",
        "description": "A rule: `allow: NAME` or `forbid: NAME`, with an optional condition",
        "additionalProperties": False,
        "properties": {
            "allow": {**name, "description": "Lets matching people through (name says why)"},
            "forbid": {**name, "description": "Keeps matching people out, whatever allows"},
            "when": _ref("Condition", "Which people the rule matches; without it, everyone"),
            "description": {"type": "string", "description": "Why this rule exists"},
        },
        "oneOf": [{"required": ["allow"]}, {"required": ["forbid"]}],
    }


def _condition() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "all": _conditions("Every condition in the list holds"),
        "any": _conditions("At least one condition in the list holds"),
        "not": _ref("Condition", "The condition does not hold"),
    }
    for name, field in FIELDS.items():
        if field.type in _TEST_NAMES:
            text = f"{field.description} ({field.type.value}, {field.classification})"
            properties[name] = _ref(_TEST_NAMES[field.type], text)
    return {
        "type": "object",
        "description": "A condition on a person; several entries must all hold",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": properties,
        "patternProperties": {
            CONSENT_KEY_RE: _ref("ConsentTest", "Whether consent to this purpose was granted"),
            EXTRA_KEY_RE: _ref("AnyTest", "A custom field mapped by a connection"),
        },
    }


def _conditions(description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "minItems": 1,
        "items": {"$ref": "#/$defs/Condition"},
        "description": description,
    }


def _tests() -> dict[str, Any]:
    text = {"type": "string"}
    number = {"type": "number"}
    order = {"anyOf": [_DATE, {"$ref": "#/$defs/RelativeTime"}]}
    order_ops = ("eq", "ne", "in", "not_in", "exists", "gt", "gte", "lt", "lte")
    return {
        "TextTest": _test("text", text, ("eq", "ne", "in", "not_in", "exists", "starts_with")),
        "IntegerTest": _test("a whole number", {"type": "integer"}, order_ops),
        "NumberTest": _test("a number", number, order_ops),
        "BooleanTest": _test("true or false", {"type": "boolean"}, ("eq", "ne", "exists")),
        "DateTest": _test("a date", _DATE, order_ops, order=order),
        "ListTest": _test("a list of text", text, ("any_of", "all_of", "exists"), contains=True),
        "ConsentTest": _test("consent", {"type": "boolean"}, ("eq", "ne", "exists")),
        "AnyTest": _test("any value", {}, tuple(_OPERATOR_TEXT), order=order),
    }


def _test(
    kind: str,
    value: dict[str, Any],
    operators: tuple[str, ...],
    *,
    order: dict[str, Any] | None = None,
    contains: bool = False,
) -> dict[str, Any]:
    """A field's test: a value (equality, or "contains" for lists), null, or operators."""
    shorthand = "The list contains this value" if contains else "Equals this value"
    return {
        "description": f"A test on a field holding {kind}",
        "anyOf": [
            {**value, "description": shorthand},
            {"type": "null", "description": "The field is empty"},
            {
                "type": "object",
                "description": "Operators, all of which must hold",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": {op: _operand(op, value, order) for op in operators},
            },
        ],
    }


def _operand(op: str, value: dict[str, Any], order: dict[str, Any] | None) -> dict[str, Any]:
    if op == "exists":
        return {"type": "boolean", "description": _OPERATOR_TEXT[op]}
    if op in ("in", "not_in", "any_of", "all_of"):
        return {"type": "array", "items": value, "description": _OPERATOR_TEXT[op]}
    if op in ("gt", "gte", "lt", "lte") and order is not None:
        return {**order, "description": _OPERATOR_TEXT[op]}
    if op in ("eq", "ne"):
        return {"anyOf": [value, {"type": "null"}], "description": _OPERATOR_TEXT[op]}
    return {**value, "description": _OPERATOR_TEXT[op]}


def _relative_time() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A time relative to now, for gt/gte/lt/lte on dates",
        "additionalProperties": False,
        "required": ["days_ago"],
        "properties": {
            "days_ago": {"type": "number", "minimum": 0, "description": "Days before now"}
        },
    }


def _fields() -> dict[str, Any]:
    properties: dict[str, Any] = {
        name: _ref("Outcome", f"{field.description} ({field.classification})")
        for name, field in FIELDS.items()
    }
    for prefix in known_classifications():
        covered = sorted(
            name
            for name, field in FIELDS.items()
            if field.classification == prefix or field.classification.startswith(prefix + ".")
        )
        properties.setdefault(
            prefix, _ref("Outcome", f"Every {prefix} field: " + ", ".join(covered))
        )
    return {
        "type": "object",
        "description": "Field or classification -> outcome; a field beats its classification, "
        "a longer classification beats a shorter one",
        "additionalProperties": False,
        "properties": properties,
        "patternProperties": {EXTRA_KEY_RE: _ref("Outcome", "A custom field")},
    }


def _outcome(masks: list[str]) -> dict[str, Any]:
    names = [*KEYWORD_OUTCOMES, *masks]
    choices: list[dict[str, Any]] = [
        {"const": name, "description": KEYWORD_OUTCOMES.get(name, f"The {name} mask")}
        for name in names
    ]
    if "null" in masks:
        choices.append({"type": "null", "description": "The null mask: sent, always empty"})
    choices.append(
        {
            "type": "object",
            "description": "A mask with its parameter, e.g. {truncate: 3}",
            "minProperties": 1,
            "maxProperties": 1,
            "propertyNames": {"enum": masks},
            "additionalProperties": {"description": "The mask's parameter"},
        }
    )
    return {"description": "show, absent, forbid, or a mask", "anyOf": choices}


def _approval() -> dict[str, Any]:
    schema = ApprovalModel.model_json_schema()
    schema["title"] = "Approval"
    return schema
