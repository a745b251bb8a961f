"""YAML loading keeps a line and column for every value; validation errors read like advice."""

from __future__ import annotations

import textwrap
import tracemalloc
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from connector_core.errors import ConfigValidationError
from connector_core.yaml_errors import (
    LocatedDocument,
    did_you_mean,
    dotted,
    load_yaml,
    validate,
)


def write(tmp_path: Path, text: str, name: str = "doc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigValidationError) as info:
        load_yaml(path)
    return [str(p) for p in info.value.problems]


DOC = """\
    # a comment line
    jobs:
      nightly:
        source: members
        tags: [a, b]
    items:
      - name: one
      - {name: two, size: 3}
    """


def test_marks_point_at_values_and_keys(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, DOC))
    assert doc.data == {
        "jobs": {"nightly": {"source": "members", "tags": ["a", "b"]}},
        "items": [{"name": "one"}, {"name": "two", "size": 3}],
    }
    assert doc.marks[()] == (2, 1)
    assert doc.marks[("jobs", "nightly", "source")] == (4, 13)
    assert doc.key_marks[("jobs", "nightly", "source")] == (4, 5)
    assert doc.marks[("jobs", "nightly", "tags", 1)] == (5, 15)
    assert doc.marks[("items", 1)] == (8, 5)
    assert doc.marks[("items", 1, "size")] == (8, 23)
    assert ("items", 1) not in doc.key_marks


def test_locate_falls_back_to_the_deepest_existing_prefix(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, DOC))
    assert doc.locate(("jobs", "nightly", "source")) == (4, 13)
    assert doc.locate(("jobs", "nightly", "source"), key=True) == (4, 5)
    assert doc.locate(("jobs", "nightly", "missing")) == (4, 5)  # the mapping's first key
    assert doc.locate(("jobs", "nightly", "missing"), key=True) == (3, 3)
    assert doc.locate(("items", 0, "gone"), key=True) == (7, 5)
    assert doc.locate(("nothing", "here")) == (2, 1)
    assert LocatedDocument(Path("x"), {}).locate(("a",)) is None


def test_get_returns_the_value_or_default(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, DOC))
    assert doc.get(("items", 1, "size")) == 3
    assert doc.get(("items", 5), "none") == "none"
    assert doc.get(("jobs", "nightly", "source", "deeper")) is None


def test_duplicate_keys_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        jobs:
          a: 1
          b: 2
          a: 3
        other: 1
        jobs: {}
        """,
    )
    assert load_problems(path) == [
        f"{path}:4:3: duplicate key 'a' (first defined on line 2)",
        f"{path}:6:1: duplicate key 'jobs' (first defined on line 1)",
    ]


def test_anchors_aliases_and_merge_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        base: &defaults {mode: mirror, enabled: true}
        jobs:
          a:
            <<: *defaults
            enabled: false
          b: *defaults
        """,
    )
    doc = load_yaml(path)
    assert doc.data["jobs"] == {
        "a": {"enabled": False, "mode": "mirror"},
        "b": {"mode": "mirror", "enabled": True},
    }
    assert doc.marks[("jobs", "a", "enabled")] == (5, 14)
    assert doc.marks[("jobs", "a", "mode")] == (1, 24)  # where the merged value is written
    assert doc.key_marks[("jobs", "b")] == (6, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nyes: 2\n", "2:1: key yes is read as true, not as text; put it in quotes"),
        ("a: 1\n3: 2\n", "2:1: key 3 is read as a number, not as text; put it in quotes"),
        ("~: 1\n", "1:1: key ~ is read as null, not as text; put it in quotes"),
        ("? [a]\n: 1\n", "1:3: a key must be plain text, not a list"),
        ("a: &x\n  b: *x\n", "1:4: this alias contains itself"),
        ("a: &x\n  b: 1\n  <<: *x\n", "1:4: this alias contains itself"),
        ("a: !env HOME\n", "1:4: unknown tag !env"),
        ("a:\n  <<: 1\n", "2:7: '<<' merges only a mapping or a list of mappings"),
        ("a: 2024-13-01\n", "1:4: 2024-13-01 is not a date (month must be in 1..12)"),
        ("a: 2024-02-30\n", "1:4: 2024-02-30 is not a date (day is out of range for month)"),
        ("a: !!int zz\n", "1:4: zz is not a number (invalid literal for int() with base 10: 'zz')"),
        ("a: !!float x\n", "1:4: x is not a number (could not convert string to float: 'x')"),
        ("2024-13-01: 1\n", "1:1: 2024-13-01 is not a date (month must be in 1..12)"),
    ],
    ids=[
        "bool-key",
        "number-key",
        "null-key",
        "list-key",
        "recursive-alias",
        "recursive-merge",
        "tag",
        "bad-merge",
        "bad-month",
        "bad-day",
        "bad-int",
        "bad-float",
        "bad-date-key",
    ],
)
def test_structural_problems(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert load_problems(path) == [f"{path}:{expected}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb:\n  c: d: e\n", "3:7: could not parse YAML: mapping values are not allowed here"),
        (
            "a:\n  b: 1\n\tc: 2\n",
            "3:1: could not parse YAML: a tab character is used for indentation; "
            "YAML allows only spaces",
        ),
        ("a: 'x\nb: 2\n", "1:4: could not parse YAML: a quoted value is never closed"),
        ("a: 1\nb\nc: 2\n", "2:1: could not parse YAML: this key has no ':' after it"),
        (
            "a:\n  b: 1\n c: 2\n",
            "3:2: could not parse YAML: this line's indentation does not match the lines above",
        ),
        (
            "a: [1, 2\nb: 3\n",
            "2:2: could not parse YAML: expected ',' or ']' to close the list opened on line 1",
        ),
        (
            "a: 1\n---\nb: 2\n",
            "2:1: could not parse YAML: the file holds more than one YAML document",
        ),
        (
            "a: *nope\n",
            "1:4: could not parse YAML: this alias has no matching anchor above it",
        ),
        ("a: 1\nb: x\x07y\n", "2:5: could not parse YAML: control character U+0007 is not allowed"),
    ],
    ids=[
        "mapping-value",
        "tab",
        "unclosed-quote",
        "no-colon",
        "indentation",
        "unclosed-list",
        "two-documents",
        "undefined-alias",
        "control-character",
    ],
)
def test_syntax_errors_are_located_and_readable(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigValidationError) as info:
        load_yaml(path)
    assert [str(p) for p in info.value.problems] == [f"{path}:{expected}"]
    assert info.value.hint
    assert info.value.__suppress_context__  # no YAML traceback behind the message


def test_unreadable_files(tmp_path: Path) -> None:
    assert load_problems(tmp_path / "missing.yaml") == [
        f"{tmp_path / 'missing.yaml'}: file not found"
    ]
    assert load_problems(tmp_path) == [f"{tmp_path}: this is a folder, not a file"]
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: caf\xe9\n")
    assert load_problems(latin1) == [f"{latin1}:1:10: the file is not valid UTF-8 (byte 0xe9)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ": the file is empty"),
        ("# only a comment\n", ": the file is empty"),
        (
            "- a\n- b\n",
            ":1:1: expected a mapping of `key: value` lines at the top level, got a list",
        ),
        (
            "just text\n",
            ":1:1: expected a mapping of `key: value` lines at the top level, got a single value",
        ),
    ],
    ids=["empty", "comment-only", "list", "scalar"],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert load_problems(path) == [f"{path}{expected}"]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert load_yaml(path).data == {"a": 1}


def test_did_you_mean() -> None:
    assert did_you_mean("shedule", ["source", "schedule"]) == "; did you mean 'schedule'?"
    assert did_you_mean("zzz", ["source", "schedule"]) == ""
    assert did_you_mean("x", []) == ""


def test_dotted() -> None:
    assert dotted(("jobs", "nightly", "mode")) == "jobs.nightly.mode"
    assert dotted(("items", 0, "name")) == "items[0].name"
    assert dotted(()) == "the top level"


# --- validate ----------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Item(Strict):
    name: str
    size: int = 1
    kind: Literal["small", "large"] = "small"


def _no_spaces(value: str) -> str:
    if " " in value:
        raise ValueError("must not contain spaces")
    return value


class Job(Strict):
    source: str
    enabled: bool = True
    password: str | None = None
    api: SecretStr | None = None
    api_key: int = 0
    key_column: int = 0
    label: Annotated[str, AfterValidator(_no_spaces)] = "x"


class Root(Strict):
    jobs: dict[str, Job] = Field(default_factory=dict)
    items: list[Item] = Field(default_factory=list)
    extra: Item | None = None
    number: int | bool = 0


def problems_of(tmp_path: Path, text: str, **kwargs: object) -> list[str]:
    doc = load_yaml(write(tmp_path, text))
    with pytest.raises(ConfigValidationError) as info:
        validate(doc, Root, **kwargs)  # type: ignore[arg-type]
    return [str(p).removeprefix(f"{doc.path}:") for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "jobs:\n  a:\n    source: x\n    enabeld: no\n",
            "4:5: unknown key 'enabeld' in jobs.a; did you mean 'enabled'?",
        ),
        (
            "items:\n  - {name: a, sise: 2}\n",
            "2:15: unknown key 'sise' in items[0]; did you mean 'size'?",
        ),
        (
            "extra: {nme: a}\n",
            [
                "1:1: missing required key 'name' in extra",
                "1:9: unknown key 'nme' in extra; did you mean 'name'?",
            ],
        ),
        (
            "extra: {name: a, zzz: 1}\n",
            "1:18: unknown key 'zzz' in extra; allowed keys: name, size, kind",
        ),
        ("jobs:\n  a:\n    enabled: true\n", "2:3: missing required key 'source' in jobs.a"),
        ("items:\n  - size: 2\n", "2:5: missing required key 'name' in items[0]"),
        (
            "items:\n  - {name: a, kind: lage}\n",
            "2:21: items[0].kind: 'lage' is not one of 'small' or 'large'; did you mean 'large'?",
        ),
        (
            "jobs:\n  a: {source: x, enabled: maybe}\n",
            "2:27: jobs.a.enabled: expected true or false, got 'maybe'",
        ),
        (
            "items:\n  - {name: a, size: lots}\n",
            "2:21: items[0].size: expected a whole number, got 'lots'",
        ),
        (
            "items: {name: a}\n",
            "1:8: items: expected a list (lines starting with '- '), got a mapping",
        ),
        (
            "jobs:\n  a:\n",
            "2:3: jobs.a: expected a mapping (indented `key: value` lines), got an empty value",
        ),
        ("jobs:\n  a: {source: x, label: a b}\n", "2:25: jobs.a.label: must not contain spaces"),
        ("number: [1]\n", "1:9: number: expected a whole number, got a list"),
        (
            "jobs:\n  a: {source: x, password: [1]}\n",
            "2:28: jobs.a.password: expected text, got a list",
        ),
        (
            "jobs:\n  a: {source: x, password: 12345}\n",
            "2:28: jobs.a.password: expected text, got a hidden value",
        ),
        (
            "jobs:\n  a: {source: x, api: 12345}\n",
            "2:23: jobs.a.api: expected text, got a hidden value",
        ),
        (
            "jobs:\n  a: {source: x, api_key: abcdef}\n",
            "2:27: jobs.a.api_key: expected a whole number, got a hidden value",
        ),
        (
            "jobs:\n  a: {source: x, key_column: abcdef}\n",
            "2:30: jobs.a.key_column: expected a whole number, got 'abcdef'",
        ),
    ],
    ids=[
        "unknown-key-in-dict-of-models",
        "unknown-key-in-list-of-models",
        "unknown-key-in-optional-model",
        "unknown-key-allowed-list",
        "missing-key-at-parent",
        "missing-key-in-list-item",
        "literal",
        "bool",
        "int",
        "list-expected",
        "empty-value",
        "value-error-prefix-stripped",
        "union-reported-once",
        "secret-name-list",
        "secret-name-scalar",
        "secret-type",
        "secret-key-name",
        "key-column-is-not-secret",
    ],
)
def test_validate_messages(tmp_path: Path, text: str, expected: str | list[str]) -> None:
    assert problems_of(tmp_path, text) == ([expected] if isinstance(expected, str) else expected)


def test_validate_never_appends_pydantic_urls_and_sorts_by_line(tmp_path: Path) -> None:
    text = "items:\n  - {name: a, size: x}\njobs:\n  a: {enabled: 3}\nextra: {name: 1}\n"
    problems = problems_of(tmp_path, text)
    assert problems == [
        "2:21: items[0].size: expected a whole number, got 'x'",
        "4:3: missing required key 'source' in jobs.a",
        "4:16: jobs.a.enabled: expected true or false, got 3",
        "5:15: extra.name: expected text, got 1; put it in quotes if you meant text",
    ]
    assert not any("pydantic" in p for p in problems)


def test_long_values_are_not_echoed(tmp_path: Path) -> None:
    long = "x" * 60
    assert problems_of(tmp_path, f"items:\n  - {{name: a, size: {long}}}\n") == [
        "2:21: items[0].size: expected a whole number, got a 60-character text"
    ]


def test_validate_with_prefix_and_context(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, "outer:\n  inner:\n    source: x\n    enabeld: no\n"))
    with pytest.raises(ConfigValidationError) as info:
        validate(doc, Job, prefix=("outer", "inner"), context={"unused": True})
    assert [str(p) for p in info.value.problems] == [
        f"{doc.path}:4:5: unknown key 'enabeld' in outer.inner; did you mean 'enabled'?"
    ]
    good = load_yaml(write(tmp_path, "outer:\n  inner: {source: x}\n", "good.yaml"))
    assert validate(good, Job, prefix=("outer", "inner")) == Job(source="x")


def test_validate_absent_sub_document_counts_as_empty(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, "outer:\n  other: 1\n"))
    with pytest.raises(ConfigValidationError) as info:
        validate(doc, Job, prefix=("outer", "inner"))
    assert [str(p) for p in info.value.problems] == [
        f"{doc.path}:1:1: missing required key 'source' in outer.inner"
    ]


def _echoing(value: str) -> str:
    raise ValueError(f"{value} is not accepted")


class Careless(Strict):
    token: Annotated[str, AfterValidator(_echoing)]


def test_secret_values_are_scrubbed_from_validator_messages(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, "token: hunter2-secret\n"))
    with pytest.raises(ConfigValidationError) as info:
        validate(doc, Careless)
    assert str(info.value) == f"{doc.path}:1:8: token: *** is not accepted"


def test_an_alias_bomb_is_refused_quickly_in_bounded_memory(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 13)]
    path = write(tmp_path, "\n".join(lines) + "\n")  # 10**13 values once expanded
    tracemalloc.start()
    problems = load_problems(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert problems == [f"{path}:6:45: the file expands to more than 1,000,000 values"]
    assert peak < 10 * 1024 * 1024  # never expanded (no timing: it flakes on a loaded machine)


def test_deep_aliases_count_their_own_levels(tmp_path: Path) -> None:
    nested = "[" * 40 + "]" * 40
    path = write(
        tmp_path,
        f"a: &deep {nested}\nb: [[[[[[[[[[[[[[[[[[[[[[[[[[*deep]]]]]]]]]]]]]]]]]]]]]]]]]\n",
    )
    assert load_problems(path) == [
        f"{path}:2:30: the lists and mappings here nest more than 64 levels deep"
    ]


def test_a_file_is_parsed_once_per_text_and_a_shared_document_stays_unchanged(
    tmp_path: Path,
) -> None:
    """Thousands of partner jobs load one policy: it is parsed once, and loading it for
    each partner (which substitutes the partner's values) never changes the shared copy."""
    from connector_core.partners import PartnerRow
    from connector_core.policy.loader import load_policy
    from connector_core.yaml_errors import _parse

    path = tmp_path / "local.yaml"
    path.write_text(
        textwrap.dedent("""\
            policy: local
            require_consent: [contact_me]
            rules:
              - allow: near
                when: {region: {partner: region}}
            fields: {email: show}
            """),
        encoding="utf-8",
    )
    first = load_yaml(path)
    for region in ("north", "south"):
        row = PartnerRow.remembered({"region": region}, "registry")
        policy = load_policy(path, purposes=["contact_me"], partner=row)
        assert region in repr(policy.rules[0].condition)
    again = load_yaml(path)
    assert again is first  # parsed once for this text
    assert again == _parse(path, path.read_text(encoding="utf-8"))  # and unchanged
    path.write_text(path.read_text(encoding="utf-8").replace("show", "hide"), encoding="utf-8")
    assert load_yaml(path).get(("fields", "email")) == "hide"  # a new text
