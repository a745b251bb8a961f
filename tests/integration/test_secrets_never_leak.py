"""A secret never appears in any output, log record, exception message or repr.

The adapter below is deliberately careless (it logs its key and puts it in an error message),
so these tests prove the engine's own defences: secrets are handed out as SecretStr, scrubbed
from every log record as it is created, and scrubbed from every message the CLI prints.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core import Adapter, AdapterSettings, AuthenticationFailed, Page, SecretRef, hookimpl
from connector_core.cli import app as cli_app
from connector_core.credentials import KeyringSecrets, StaticSecrets
from connector_core.plugins import make_plugin_manager, register_builtin
from tests.integration.test_cli import run

log = logging.getLogger("connector.vault")


class VaultSettings(AdapterSettings):
    """Settings with a secret."""

    url: str = "http://127.0.0.1:9"
    api_key: SecretRef


class VaultAdapter(Adapter):
    """A careless adapter: it logs its key and repeats it in errors."""

    name = "vault"
    settings_model = VaultSettings

    def _key(self) -> str:
        key = self.secrets.resolve(self.settings.api_key).get_secret_value()
        log.debug("connecting to %s with key %s", self.settings.url, key)
        return key

    def check(self) -> None:
        raise AuthenticationFailed(
            f"the server refused the key {self._key()}", hint=f"is {self._key()} right?"
        )

    def read(self, *, cursor: Any = None, fields: Any = None, where: Any = None) -> Iterator[Page]:
        key = self._key()
        try:
            raise ValueError(f"bad key {key}")
        except ValueError:
            log.exception("reading failed")
        raise AuthenticationFailed(f"refused {key}")


class VaultPlugin:
    @hookimpl
    def register_adapters(self) -> list[type[Adapter]]:
        return [VaultAdapter]


@pytest.fixture(autouse=True)
def with_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add the vault adapter to the real plugin manager the CLI builds."""

    def manager(**kwargs: Any) -> Any:
        pm = make_plugin_manager(**kwargs)
        register_builtin(pm, VaultPlugin(), "vault")
        return pm

    monkeypatch.setattr(cli_app, "make_plugin_manager", manager)


def write_config(folder: Path, api_key: str) -> Path:
    path = folder / "connector.yaml"
    path.write_text(
        "version: 1\nnetwork: {name: Test}\nconsent: {purposes: {contact_me: {description: x}}}\n"
        f"connections:\n  vault:\n    adapter: vault\n    settings:\n      api_key: {api_key}\n",
        encoding="utf-8",
    )
    return path


SECRETS = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~",
    min_size=12,
    max_size=40,
)
EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def outputs(result: Any, caplog: pytest.LogCaptureFixture) -> str:
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    return f"{result.stdout}\n{result.stderr}\n{result.exception!r}\n{logged}"


@EXAMPLES
@given(secret=SECRETS)
def test_keyring_secret_never_leaks(
    secret: str, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path_factory.mktemp("vault")
    write_config(folder, "{secret: api_key}")
    runner = CliRunner()
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    seen = []
    stored = run(
        runner, "credentials", "set", "vault", "api_key", "--force", input=secret, cwd=folder
    )
    assert stored.exit_code == 0, stored.output
    seen.append(outputs(stored, caplog))
    for args in (
        ["credentials", "list"],
        ["credentials", "list", "--json"],
        ["-v", "doctor"],
        ["-v", "--log-format", "json", "doctor", "--json"],
        ["-vv", "read", "vault"],
        ["--log-format", "json", "-v", "read", "vault"],
    ):
        result = run(runner, *args, cwd=folder)
        assert result.exit_code in (0, 4), (args, result.output)
        seen.append(outputs(result, caplog))
    assert "refused" in seen[-1]  # the careless messages were printed, scrubbed
    for text in seen:
        assert secret not in text


@EXAMPLES
@given(secret=SECRETS)
def test_environment_secret_never_leaks(
    secret: str, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path_factory.mktemp("vault")
    write_config(folder, "{env: VAULT_KEY}")
    caplog.set_level(logging.DEBUG)
    result = run(CliRunner(), "-v", "doctor", cwd=folder, env={"VAULT_KEY": secret})
    assert result.exit_code == 4
    assert "the server refused the key ***" in result.stdout
    assert secret not in outputs(result, caplog)


@EXAMPLES
@given(secret=SECRETS)
def test_literal_secret_in_yaml_is_refused_without_echo(
    secret: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("vault")
    write_config(folder, json.dumps(secret))
    result = run(CliRunner(), "doctor", cwd=folder)
    assert result.exit_code == 3
    assert "secrets never live in connector.yaml" in result.stdout
    assert secret not in result.output


@EXAMPLES
@given(secret=SECRETS)
def test_reprs_hide_secrets(secret: str) -> None:
    secrets = StaticSecrets({"api_key": secret})
    settings_ = VaultSettings(api_key=SecretRef(secret="api_key"))
    adapter = VaultAdapter(settings_, secrets)
    value = secrets.resolve(settings_.api_key)
    for shown in (
        repr(secrets),
        repr(settings_),
        repr(adapter),
        repr(value),
        str(value),
        settings_.model_dump_json(),
        repr(KeyringSecrets("Test", "vault")),
    ):
        assert secret not in shown
