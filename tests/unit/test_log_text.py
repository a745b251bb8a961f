"""log_text, what leak tests search in log records: every word a record's data could reach,
none of the words logging fills in from the code (a value "WARNIN" is no leak)."""

from __future__ import annotations

import logging

import pytest

from connector_core.testing.checks import log_text


def test_what_a_record_carries_is_searched(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("connector.sync").warning(
            "job %s: %s", "north", "an argument", extra={"person": "an extra field"}
        )
    text = log_text(caplog.records)
    assert "job north: an argument" in text
    assert "an extra field" in text


def test_no_word_logging_fills_in_from_the_code_is_taken_for_a_leak() -> None:
    """The level's name and number, the logger's name, the file, module, function and line
    of the call: a value that is part of one of them (found by hypothesis: an email
    "WARNIN") is not in the text searched."""
    record = logging.LogRecord(
        "connector.sync", logging.WARNING, "/x/runner.py", 778, "ok", (), None, func="_guard"
    )
    text = log_text([record])
    assert "ok" in text
    for filled in ("WARNIN", "30", "connector.syn", "/x/runner.p", "runne", "778", "_guar"):
        assert filled not in text, filled
