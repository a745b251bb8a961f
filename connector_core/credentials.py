"""Secrets: referenced from connector.yaml, stored in the OS keyring or an environment variable.

A connection setting that holds a secret is typed :class:`SecretRef` and written in YAML as
``{secret: api_key}`` or as ``{env: CIVICRM_API_KEY}``. A ``{secret: KEY}`` lives in the OS
keyring under the service ``commons-connector:<network name>:<connection>`` (the network's own
secrets under the connection ``network``), so two networks on one OS account never share one;
when the keyring has none, or its backend fails, the variable
``CONNECTOR_SECRET_<CONNECTION>_<KEY>`` stands in. An entry written before namespacing
(``commons-connector:<connection>``) is still read, with a warning, until ``connector
credentials migrate`` copies it. Values are handed out as :class:`pydantic.SecretStr` and
remembered by the scrubber (:mod:`connector_core.scrub`), so they never show in a repr, a log
record, an output or an error message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Protocol

if sys.platform != "darwin":
    # keyring's macOS backend, whose priority refuses every other system, binds Apple's
    # libraries on import: ctypes.util.find_library runs ldconfig or gcc (25-110 ms of every
    # command that reads a secret). Without its bindings it refuses alike, so the same
    # backend is chosen.
    sys.modules.setdefault("keyring.backends.macOS.api", None)  # type: ignore[arg-type]

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from connector_core import scrub
from connector_core.errors import ConfigError, SecretMissing

SERVICE_PREFIX = "commons-connector"
#: The keyring "connection" of the network's own secrets (``network:`` in connector.yaml).
NETWORK = "network"
REDACTED = scrub.REDACTED
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: The shortest secret accepted: hash and ledger keys, API keys and app passwords are longer,
#: and a short value could neither be kept secret nor be scrubbed without mangling output.
MIN_LENGTH = 12
log = logging.getLogger("connector.credentials")
#: Where :meth:`KeyringSecrets.lookup` says it found an entry of before namespacing.
LEGACY_SOURCE = "keyring (old shared entry)"
_warned: set[tuple[str, str, str]] = set()


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
    scrub.remember(value)
    return SecretStr(value)


def redact(text: str) -> str:
    """Scrub every secret handed out so far, in any form, from `text` (see :mod:`.scrub`)."""
    return scrub.scrub(text)


def service_name(network: str, connection: str) -> str:
    """The keyring service under which a network's connection keeps its secrets.

    The network's name (``network: name:`` in connector.yaml) is part of it, so two networks
    run by one OS account never share an entry.
    """
    return f"{SERVICE_PREFIX}:{network}:{connection}"


def legacy_service_name(connection: str) -> str:
    """The service of releases before namespacing, shared by every network of an account."""
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


def check_value(value: str, connection: str, key: str) -> str:
    """Refuse a secret shorter than :data:`MIN_LENGTH` characters, or with leading or
    trailing whitespace or a control character.

    Such a value is nearly always a copy-and-paste accident (a trailing line break), would be
    sent as an invalid HTTP header, and its escaped form would show in error messages. A short
    one is guessable, and scrubbing it from output would mangle ordinary words and paths.
    """
    hint = (
        f'Store it again without: `printf %s "$VALUE" | connector credentials set '
        f"{connection} {key} --force` (or fix its environment variable)."
    )
    if value.strip() != value:
        problem = "starts or ends with whitespace or a line break"
    elif _CONTROL_RE.search(value):
        problem = "holds a control character (a line break or a tab?)"
    elif len(value) < MIN_LENGTH:
        problem = f"is shorter than {MIN_LENGTH} characters"
        hint = (
            f"Use a long random value (e.g. `openssl rand -hex 16`) and store it again with "
            f"`connector credentials set {connection} {key} --force` (or fix its environment "
            f"variable); for an API key or app password, create a longer one on the server."
        )
    else:
        return value
    raise ConfigError(f"the secret {key!r} of {owner(connection)} {problem}", hint=hint)


def owner(connection: str) -> str:
    """How messages name whose secret it is: the network's or a connection's."""
    return "the network" if connection == NETWORK else f"connection {connection!r}"


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
    """Resolve a connection's secrets: this network's keyring entry, then the entry of before
    namespacing (with a warning; `legacy`), then the connection's environment variable.

    A keyring backend that fails (raises) is reported only when no variable stands in for it.
    """

    def __init__(
        self,
        network: str,
        connection: str,
        environ: Mapping[str, str] | None = None,
        *,
        legacy: bool = True,
    ) -> None:
        self.network = network
        self.connection = connection
        self.legacy = legacy
        self._environ = os.environ if environ is None else environ

    def resolve(self, ref: SecretRef) -> SecretStr:
        """Return the secret for `ref`, or raise :class:`SecretMissing` saying how to set it."""
        if ref.env is not None:
            value = self._environ.get(ref.env)
            if not value:
                raise SecretMissing(
                    f"{owner(self.connection)}: environment variable {ref.env} is not set",
                    hint=f"Export {ref.env} in the job's environment.",
                )
            return _hand_out(check_value(value, self.connection, ref.env))
        assert ref.secret is not None
        found = self.lookup(ref.secret)
        if found.source == LEGACY_SOURCE:
            self._warn_legacy(ref.secret)
        if found.value is None:
            variable = env_var_name(self.connection, ref.secret)
            broken = f" ({found.failure})" if found.failure else ""
            raise SecretMissing(
                f"{owner(self.connection)} needs the secret {ref.secret!r}, which is neither "
                f"in the keyring{broken} nor in {variable}",
                hint=f"Run `connector credentials set {self.connection} {ref.secret}`, or on a "
                f"headless server export {variable}.",
            )
        return _hand_out(check_value(found.value, self.connection, ref.secret))

    def lookup(self, key: str) -> Found:
        """Where the secret `key` is found, and its value (None when nowhere)."""
        failure = None
        try:
            value = get_secret(self.network, self.connection, key)
            if value is not None:
                return Found(value, "keyring")
            if self.legacy:
                value = _legacy_secret(self.connection, key)
                if value is not None:
                    return Found(value, LEGACY_SOURCE)
        except ConfigError as err:
            failure = str(err).removeprefix("cannot read the keyring: ")
        variable = env_var_name(self.connection, key)
        value = self._environ.get(variable) or None
        return Found(value, f"env {variable}" if value else "", failure)

    def _warn_legacy(self, key: str) -> None:
        seen = (self.network, self.connection, key)
        if seen not in _warned:
            _warned.add(seen)
            log.warning(
                "%s: the secret %r was read from the keyring entry of before network "
                "namespacing (%s), which every network on this account shares; run "
                "`connector credentials migrate` to give this network its own copy",
                owner(self.connection),
                key,
                legacy_service_name(self.connection),
            )

    def __repr__(self) -> str:
        return f"KeyringSecrets(network={self.network!r}, connection={self.connection!r})"


@dataclasses.dataclass(frozen=True)
class Found:
    """Where a secret was found: ``value`` (None when nowhere), ``source`` (``keyring``,
    ``keyring (old shared entry)`` or ``env VARIABLE``) and why the keyring failed, if it did."""

    value: str | None
    source: str
    failure: str | None = None

    def __repr__(self) -> str:
        return f"Found(source={self.source!r}, failure={self.failure!r})"


def _describe(ref: SecretRef) -> str:
    return f"secret {ref.secret!r}" if ref.secret else f"environment variable {ref.env}"


#: keyring's backend that holds nothing (`get_password` answers None, set and delete do nothing).
NULL_BACKEND = "keyring.backends.null.Keyring"


def _keyring() -> ModuleType:
    """The keyring package, imported on first use: with what it loads (importlib_metadata,
    jaraco, urllib, email...) 0.03-0.05 s of a command's start, which a command reading only
    `{env: ...}` secrets, or a keyring named null (:func:`_holds_nothing`), never needs."""
    import keyring
    import keyring.errors

    return keyring


def _holds_nothing() -> bool:
    """Whether a keyring read can only answer None without loading keyring: the environment
    names keyring's null backend (``PYTHON_KEYRING_BACKEND``, which keyring itself consults
    before its config file and its detection) and keyring is not loaded yet (once it is, a
    backend set in the process with ``keyring.set_keyring`` comes first, so it is asked)."""
    return "keyring" not in sys.modules and os.environ.get("PYTHON_KEYRING_BACKEND") == NULL_BACKEND


def _keyring_call(action: str, name: str, *args: str) -> Any:
    """Call keyring's function `name` (get_password, set_password...) with `args`; its
    failures as a ConfigError that names the action, never a value."""
    keyring = _keyring()
    try:
        return getattr(keyring, name)(*args)
    except keyring.errors.NoKeyringError:
        raise ConfigError(
            f"cannot {action}: this machine has no keyring backend",
            hint="Run where the desktop's keyring (Secret Service, KWallet, macOS Keychain) is "
            "available, or on a headless server give the secret through its "
            "CONNECTOR_SECRET_... environment variable.",
        ) from None
    except keyring.errors.PasswordDeleteError:
        raise
    except Exception as exc:  # a backend may raise anything (D-Bus, a locked file)
        # The backend's message is about the backend, never the secret value; say its kind.
        raise ConfigError(
            f"cannot {action}: the keyring backend failed ({type(exc).__name__})",
            hint="Unlock or repair the keyring, or give the secret through its "
            "CONNECTOR_SECRET_... environment variable.",
        ) from None


def get_secret(network: str, connection: str, key: str) -> str | None:
    """Read a network's secret from the keyring; None when absent."""
    return _read(service_name(network, connection), check_key(key))


def _legacy_secret(connection: str, key: str) -> str | None:
    return _read(legacy_service_name(connection), check_key(key))


def _read(service: str, key: str) -> str | None:
    if _holds_nothing():
        return None
    value: str | None = _keyring_call("read the keyring", "get_password", service, key)
    return value


def set_secret(network: str, connection: str, key: str, value: str) -> None:
    """Store a network's secret in the keyring, and read it back: a backend that keeps
    nothing (keyring's null backend) or not what it was given raises ConfigError, so that
    nothing relies on a secret that is not there (a generated ledger key would be lost with
    the first ledger row written with it)."""
    if not value:
        raise ConfigError("refusing to store an empty secret", hint="Type or pipe the value.")
    check_value(value, connection, key)
    scrub.remember(value)
    service, key = service_name(network, connection), check_key(key)
    _keyring_call("write to the keyring", "set_password", service, key, value)
    if _keyring_call("read the keyring", "get_password", service, key) != value:
        raise ConfigError(
            f"the keyring backend {_backend_name(_keyring().get_keyring())} did not keep "
            f"{key} for {connection}",
            hint="Use a keyring that keeps secrets (the desktop's: Secret Service, KWallet, "
            f"macOS Keychain), or give the secret through {env_var_name(connection, key)} in "
            "the jobs' environment.",
        )


def delete_secret(network: str, connection: str, key: str, *, legacy: bool = False) -> bool:
    """Remove a secret from the keyring (the old shared entry when `legacy`); False when
    there was none."""
    service = legacy_service_name(connection) if legacy else service_name(network, connection)
    try:
        _keyring_call("delete from the keyring", "delete_password", service, check_key(key))
    except _keyring().errors.PasswordDeleteError:
        return False
    return True


def migrate_secret(network: str, connection: str, key: str) -> bool:
    """Copy the old shared entry of `key` into this network's namespace, unless the network
    has its own already; True when a copy was made. The old entry is kept (another network
    on this account may still read it)."""
    if get_secret(network, connection, key) is not None:
        return False
    value = _legacy_secret(connection, key)
    if value is None:
        return False
    set_secret(network, connection, key, value)
    return True


def keyring_keeps_nothing() -> bool:
    """Whether the keyring in use is keyring's null backend, which keeps no secret: then a
    secret can only come from a variable (a ledger key cannot be generated into it)."""
    if _holds_nothing():
        return True
    try:
        backend = _keyring().get_keyring()
    except Exception:  # a broken backend is reported where it is used
        return False
    return _backend_name(backend) == NULL_BACKEND


def backend_stores_in_clear() -> str | None:
    """The keyring backend's name when it keeps secrets readable in a plain file (keyrings.alt's
    PlaintextKeyring, which a headless machine falls back to); else None."""
    try:
        backend = _keyring().get_keyring()
    except Exception:  # a broken backend is reported where it is used
        return None
    for candidate in getattr(backend, "backends", None) or [backend]:  # a ChainerBackend
        if any(cls.__qualname__ in _CLEAR_BACKENDS for cls in type(candidate).__mro__):
            return _backend_name(candidate)
    return None


def _backend_name(backend: object) -> str:
    """A keyring backend's class as PYTHON_KEYRING_BACKEND names it."""
    return f"{type(backend).__module__}.{type(backend).__qualname__}"


#: Backends that keep secrets readable by anyone who can read their file.
_CLEAR_BACKENDS = frozenset({"PlaintextKeyring"})


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
