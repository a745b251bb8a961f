"""Servers' answers to writes are cut to a summary that quotes nothing they were sent."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from connector_core.http import write_error_text

VALUE = st.text(alphabet=string.ascii_letters + "'\"` {}[]:,\\", min_size=1, max_size=12).map(
    lambda t: f"Zq{t}Qz"
)
TEMPLATES = (
    "DB Error: Duplicate entry '{v}' for key 'UI_external_identifier'",
    "'{v}' is not a valid option for field prefix_id",
    "DB Error: Duplicate entry '{{'first_name': '{v}', 'x': [\"{v}\"]}}' for key 'UI'",
    'Invalid value "{v}" for field birth_date; values: {{"city": "{v}"}}',
    "Mandatory values missing: `{v}`",
)


@given(value=VALUE, template=st.sampled_from(TEMPLATES))
def test_no_quoted_value_survives(value: str, template: str) -> None:
    summary = write_error_text(template.format(v=value))
    assert "Zq" not in summary
    assert "Qz" not in summary


def test_what_stays_names_the_failure() -> None:
    assert (
        write_error_text("'Wen O'Brien' is not a valid option for field prefix_id")
        == "'…' is not a valid option for field prefix_id"
    )
    assert write_error_text("DB Error: already exists") == "DB Error: already exists"
    assert write_error_text("x" * 300) == "x" * 200
