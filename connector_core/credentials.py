"""Secrets: referenced from connector.yaml, stored in the OS keyring or an environment variable.

A connection setting that holds a secret is typed :class:`SecretRef` and written in YAML as
``{secret: api_key}`` (keyring entry ``api_key`` of that connection; on a headless server the
variable ``CONNECTOR_SECRET_<CONNECTION>_API_KEY`` is used when no keyring has it) or as
``{env: CIVICRM_API_KEY}``. Values are handed out as :class:`pydantic.SecretStr` so they never
show in a repr, a log record or an error message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Protocol

import keyring
import keyring.errors
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from connector_core.errors import ConfigError, SecretMissing

SERVICE_PREFIX = "commons-connector"
#: Every secret value this process has handed out; log and error output is scrubbed of them.
_HANDED_OUT: set[str] = set()
REDACTED = "***"
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class SecretRef(BaseModel):
    """Where a secret lives: ``{secret: KEY}`` (keyring) or ``{env: VARIABLE}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str | None = None
    env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_literal_secrets(cls, data: Any) -> Any:
        if isinstance(data, str | int | float):
            raise ValueError(
                "secrets never live in connector.yaml; store it with "
                "`connector credentials set CONNECTION KEY` and write `{secret: KEY}` here, "
                "or `{env: VARIABLE}` on a headless server"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.secret is None) == (self.env is None):
            raise ValueError("write exactly one of `secret: KEY` or `env: VARIABLE`")
        return self


def _hand_out(value: str) -> SecretStr:
    if len(value) >= 4:  # shorter strings would scrub ordinary words from messages
        _HANDED_OUT.add(value)
        _install_log_scrubber()
    return SecretStr(value)


def _install_log_scrubber() -> None:
    """Scrub handed-out secrets from every log record as it is created, whichever logger
    or handler it goes to: a plugin's careless debug line must not leak either."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_connector_scrubber", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    factory._connector_scrubber = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def redact(text: str) -> str:
    """Replace every secret value handed out so far with ``***`` (defence in depth)."""
    for value in _HANDED_OUT:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def service_name(connection: str) -> str:
    """The keyring service under which a connection's secrets are stored."""
    return f"{SERVICE_PREFIX}:{connection}"


def env_var_name(connection: str, key: str) -> str:
    """The fallback environment variable for a keyring secret on headless servers."""
    return "CONNECTOR_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{connection}_{key}".upper())


def check_key(key: str) -> str:
    """Validate a secret key name (it becomes part of a keyring entry and a variable name)."""
    if not _KEY_RE.match(key):
        raise ConfigError(
            f"{key!r} is not a valid secret key name",
            hint="Use letters, digits, '_', '.' or '-', starting with a letter.",
        )
    return key


class SecretLookup(Protocol):
    """What an adapter is given to turn its settings' :class:`SecretRef` into values."""

    def resolve(self, ref: SecretRef) -> SecretStr:
        """Return the secret, or raise :class:`SecretMissing` with a hint."""
        ...


class NoSecrets:
    """A lookup for connections that need no secrets; every resolve fails clearly."""

    def resolve(self, ref: SecretRef) -> SecretStr:
        """Always raise: this connection was given no secrets."""
        raise SecretMissing(f"no secret is available for {_describe(ref)}")


class StaticSecrets:
    """A lookup over a fixed mapping of key (or env name) to value; for tests and the kit."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = {k: _hand_out(v) for k, v in values.items()}

    def resolve(self, ref: SecretRef) -> SecretStr:
        """Return the value stored under the ref's key or variable name."""
        name = ref.secret or ref.env or ""
        if name not in self._values:
            raise SecretMissing(f"no secret is available for {_describe(ref)}")
        return self._values[name]

    def __repr__(self) -> str:
        return f"StaticSecrets(keys={sorted(self._values)})"


class KeyringSecrets:
    """Resolve a connection's secrets from the keyring, then from its environment variable."""

    def __init__(self, connection: str, environ: Mapping[str, str] | None = None) -> None:
        self.connection = connection
        self._environ = os.environ if environ is None else environ

    def resolve(self, ref: SecretRef) -> SecretStr:
        """Return the secret for `ref`, or raise :class:`SecretMissing` saying how to set it."""
        if ref.env is not None:
            value = self._environ.get(ref.env)
            if not value:
                raise SecretMissing(
                    f"connection {self.connection!r}: environment variable {ref.env} is not set",
                    hint=f"Export {ref.env} in the job's environment.",
                )
            return _hand_out(value)
        assert ref.secret is not None
        value = get_secret(self.connection, ref.secret)
        if value is None:
            value = self._environ.get(env_var_name(self.connection, ref.secret))
        if not value:
            raise SecretMissing(
                f"connection {self.connection!r} needs the secret {ref.secret!r}, "
                "which is not in the keyring",
                hint=f"Run `connector credentials set {self.connection} {ref.secret}`, or on a "
                f"headless server export {env_var_name(self.connection, ref.secret)}.",
            )
        return _hand_out(value)

    def __repr__(self) -> str:
        return f"KeyringSecrets(connection={self.connection!r})"


def _describe(ref: SecretRef) -> str:
    return f"secret {ref.secret!r}" if ref.secret else f"environment variable {ref.env}"


def _keyring_call(action: str, func: Any, *args: str) -> Any:
    try:
        return func(*args)
    except keyring.errors.NoKeyringError:
        raise ConfigError(
            f"cannot {action}: this machine has no keyring backend",
            hint="Install a backend (for example `pip install keyrings.alt`), or on a headless "
            "server give the secret through its CONNECTOR_SECRET_... environment variable.",
        ) from None
    except keyring.errors.PasswordDeleteError:
        raise
    except keyring.errors.KeyringError as exc:
        # The backend's message is about the backend, never the secret value.
        raise ConfigError(f"cannot {action}: keyring error {type(exc).__name__}") from None


def get_secret(connection: str, key: str) -> str | None:
    """Read a secret from the keyring; None when absent."""
    value: str | None = _keyring_call(
        "read the keyring", keyring.get_password, service_name(connection), check_key(key)
    )
    return value


def set_secret(connection: str, key: str, value: str) -> None:
    """Store a secret in the keyring."""
    if not value:
        raise ConfigError("refusing to store an empty secret", hint="Type or pipe the value.")
    _keyring_call(
        "write to the keyring",
        keyring.set_password,
        service_name(connection),
        check_key(key),
        value,
    )


def delete_secret(connection: str, key: str) -> bool:
    """Remove a secret from the keyring; False when there was none."""
    try:
        _keyring_call(
            "delete from the keyring",
            keyring.delete_password,
            service_name(connection),
            check_key(key),
        )
    except keyring.errors.PasswordDeleteError:
        return False
    return True


def secret_refs(settings: BaseModel, prefix: str = "") -> list[tuple[str, SecretRef]]:
    """Every :class:`SecretRef` in a settings model, with its dotted setting name."""
    found: list[tuple[str, SecretRef]] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretRef):
            found.append((prefix + name, value))
        elif isinstance(value, BaseModel):
            found.extend(secret_refs(value, f"{prefix}{name}."))
    return found
