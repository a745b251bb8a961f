"""Validation of the csv connection settings, and of the connection's mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from connector_csv import CsvAdapter, CsvSettings
from pydantic import ValidationError

from connector_core.errors import ConfigError


def settings(**values: Any) -> CsvSettings:
    return CsvSettings.model_validate({"path": "people.csv", **values})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"delimiter": ";;"}, "exactly one character"),
        ({"delimiter": ""}, "exactly one character"),
        ({"delimiter": "\n"}, "line break"),
        ({"quotechar": "''"}, "exactly one character"),
        ({"delimiter": '"'}, "must be different"),
        ({"encoding": "klingon-8"}, "unknown text encoding 'klingon-8'"),
        ({"encoding": "base64"}, "unknown text encoding"),
        ({"quoting": "sometimes"}, "'minimal', 'all', 'nonnumeric' or 'none'"),
        ({"quoting": "none", "delimiter": "\\"}, "backslash"),
        ({"write_bom": True, "encoding": "latin-1"}, "write_bom"),
        ({"key_column": ""}, "at least 1 character"),
        ({"page_size": 0}, "greater than or equal to 1"),
        ({"delimeter": ";"}, "delimeter"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_settings_are_rejected_with_a_reason(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        settings(**values)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("given", "delimiter"), [("tab", "\t"), ("\\t", "\t"), ("\t", "\t"), (";", ";")]
)
def test_delimiter_names(given: str, delimiter: str) -> None:
    assert settings(delimiter=given).delimiter == delimiter


def test_relative_path_starts_at_the_config_folder(tmp_path: Path) -> None:
    loaded = CsvSettings.model_validate({"path": "data/people.csv"}, context={"base_dir": tmp_path})
    assert loaded.path == tmp_path / "data" / "people.csv"


def test_every_setting_is_described_in_the_json_schema() -> None:
    schema = CsvSettings.model_json_schema()
    undescribed = [
        name for name, prop in schema["properties"].items() if not prop.get("description")
    ]
    assert not undescribed
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "utf-8-sig"])
def test_utf8_spellings_read_with_a_bom_and_write_without(encoding: str) -> None:
    loaded = settings(encoding=encoding)
    assert (loaded.read_encoding, loaded.write_encoding) == ("utf-8-sig", "utf-8")


def test_unknown_mapping_field_suggests_a_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'email'"):
        CsvAdapter(settings(), mapping={"emial": "Mail"})


def test_bare_consent_mapping_explains_purposes() -> None:
    with pytest.raises(ConfigError, match=r"consent\.<purpose>"):
        CsvAdapter(settings(), mapping={"consent": "Consent"})


def test_mapping_id_to_another_column_points_to_key_column() -> None:
    with pytest.raises(ConfigError) as info:
        CsvAdapter(settings(), mapping={"id": "member_no"})
    assert info.value.hint is not None
    assert "key_column: member_no" in info.value.hint


def test_mapping_id_to_the_key_column_is_fine() -> None:
    CsvAdapter(settings(key_column="member_no"), mapping={"id": "member_no"})
