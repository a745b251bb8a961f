"""One exception root; each class tells the engine what to do next and the admin what to do."""

from __future__ import annotations

import enum
from typing import ClassVar

from connector_core.scrub import scrub


class ExitCode(enum.IntEnum):
    """Process exit codes, mapped from exceptions in one place (the CLI group)."""

    OK = 0
    RECORDS_FAILED = 1
    USAGE = 2
    CONFIG = 3
    UNAVAILABLE = 4
    DELETES_HELD = 5


class ConnectorError(Exception):
    """Everything we raise on purpose. `str(err)` is for humans; `hint` is the next step."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # A message may quote a server's answer; no secret it echoes survives into it.
        super().__init__(scrub(message))
        self.hint = hint and scrub(hint)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigError(ConnectorError):
    """connector.yaml (or a file it names) is wrong; fatal until the admin fixes it."""


class ConfigValidationError(ConfigError):
    """One or more located problems in a YAML file; `problems` holds them in file order."""

    def __init__(self, problems: list[Problem], *, hint: str | None = None) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems), hint=hint)


class PolicyError(ConfigError):
    """A policy file is invalid."""


class PluginError(ConnectorError):
    """A plugin failed to import, misspelled a hook, or clashes with another plugin."""


class SecretMissing(ConfigError):
    """A secret a connection needs is neither in the keyring nor in its environment variable."""


class AdapterError(ConnectorError):
    """A remote tool (or file) could not be used; stop this connection's work."""

    exit_code: ClassVar[ExitCode] = ExitCode.UNAVAILABLE


class AuthenticationFailed(AdapterError):
    """The remote tool refused our credentials: fatal, never retried."""


class AdapterUnavailable(AdapterError):
    """Timeouts, 5xx, 429: retriable; the next run resumes."""


class WriteNotSupported(AdapterError):
    """The adapter cannot do the requested kind of write (read-only, or no delete)."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG


class RecordRejected(ConnectorError):
    """One record could not be read or written: count it, report it, continue."""

    exit_code: ClassVar[ExitCode] = ExitCode.RECORDS_FAILED


class Problem:
    """A message tied to a place in a file: printed as `path:line:col: message`."""

    __slots__ = ("col", "line", "message", "path", "severity")

    def __init__(
        self,
        path: str,
        line: int | None,
        col: int | None,
        message: str,
        *,
        severity: str = "error",
    ) -> None:
        self.path = path
        self.line = line
        self.col = col
        self.message = message
        self.severity = severity

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))
