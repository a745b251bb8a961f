"""Logging for humans (text on stderr) and machines (JSON lines).

Secrets are scrubbed from log records as they are created, and the formatters scrub each
formatted line once more, extras and exception text included (see :mod:`connector_core.scrub`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from connector_core.scrub import scrub

LOGGER_NAME = "connector"
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record, its extras and (scrubbed) exception text."""
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            data["exception"] = record.exc_text or self.formatException(record.exc_info)
        return scrub(json.dumps(data, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``level: message`` with scrubbed exception text."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, scrubbed (its exception text included)."""
        return scrub(super().format(record))


def configure(*, verbose: int = 0, quiet: bool = False, fmt: str = "text") -> None:
    """Send the ``connector`` loggers to stderr at a level set by ``-v``/``--quiet``."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 0 else logging.WARNING)
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_connector", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._connector = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = True  # keep pytest's caplog and embedding applications working
