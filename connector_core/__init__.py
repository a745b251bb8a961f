"""Commons Connector: share people's data between tools under consent and permission policies."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from connector_core.adapters import (
    Adapter,
    AdapterSettings,
    Capability,
    Change,
    KnownRows,
    MissingField,
    Page,
    ReadProblem,
    SourceFields,
    WriteResult,
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

try:
    __version__ = version("commons-connector")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "FIELDS",
    "Adapter",
    "AdapterError",
    "AdapterSettings",
    "AdapterUnavailable",
    "AuthenticationFailed",
    "Capability",
    "Change",
    "ConfigError",
    "ConnectorError",
    "ExitCode",
    "Expected",
    "Field",
    "FieldMapping",
    "FieldType",
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
    "__version__",
    "hookimpl",
]
