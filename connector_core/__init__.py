"""Commons Connector: share people's data between tools under consent and permission policies."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector_core.adapters import (
        PART_DIGEST,
        Adapter,
        AdapterSettings,
        Block,
        Capability,
        Change,
        ImmediateWrites,
        KnownBlocks,
        KnownRows,
        MissingField,
        Page,
        ReadProblem,
        SourceFields,
        WriteResult,
        WriteSession,
    )
    from connector_core.credentials import SecretRef
    from connector_core.errors import (
        AdapterError,
        AdapterUnavailable,
        AuthenticationFailed,
        ConfigError,
        ConnectorError,
        ExitCode,
        PluginError,
        RecordRejected,
        WriteNotSupported,
    )
    from connector_core.hookspecs import hookimpl
    from connector_core.records import (
        FIELDS,
        Expected,
        Field,
        FieldMapping,
        FieldType,
        Record,
        ValueInvalid,
    )

    __version__: str

#: Where each public name lives. The package imports none of them up front, so that
#: `connector --help` (which imports this package) does not pay for pydantic or keyring: a
#: name's module is imported the first time the name is used (PEP 562).
_HOMES = {
    "adapters": [
        "Adapter",
        "AdapterSettings",
        "Block",
        "Capability",
        "Change",
        "ImmediateWrites",
        "KnownBlocks",
        "KnownRows",
        "MissingField",
        "PART_DIGEST",
        "Page",
        "ReadProblem",
        "SourceFields",
        "WriteResult",
        "WriteSession",
    ],
    "credentials": ["SecretRef"],
    "errors": [
        "AdapterError",
        "AdapterUnavailable",
        "AuthenticationFailed",
        "ConfigError",
        "ConnectorError",
        "ExitCode",
        "PluginError",
        "RecordRejected",
        "WriteNotSupported",
    ],
    "hookspecs": ["hookimpl"],
    "records": [
        "FIELDS",
        "Expected",
        "Field",
        "FieldMapping",
        "FieldType",
        "Record",
        "ValueInvalid",
    ],
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("commons-connector")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, and keep the name here."""
    if name == "__version__":
        value: Any = _version()
    elif name in _HOME:
        value = getattr(import_module(f"connector_core.{_HOME[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME, "__version__"])


__all__ = [
    "FIELDS",
    "PART_DIGEST",
    "Adapter",
    "AdapterError",
    "AdapterSettings",
    "AdapterUnavailable",
    "AuthenticationFailed",
    "Block",
    "Capability",
    "Change",
    "ConfigError",
    "ConnectorError",
    "ExitCode",
    "Expected",
    "Field",
    "FieldMapping",
    "FieldType",
    "ImmediateWrites",
    "KnownBlocks",
    "KnownRows",
    "MissingField",
    "Page",
    "PluginError",
    "ReadProblem",
    "Record",
    "RecordRejected",
    "SecretRef",
    "SourceFields",
    "ValueInvalid",
    "WriteNotSupported",
    "WriteResult",
    "WriteSession",
    "__version__",
    "hookimpl",
]
