"""`connector --help` imports no engine: the commands and plugins' adapters load on use.

What a command imports is checked in a fresh interpreter (this test process has imported
everything already); no timing here, bench/startup_bench.py measures the time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from keyrings.alt.file import PlaintextKeyring

import connector_core.cli
from connector_core import hookimpl
from connector_core.cli import app as cli_app
from connector_core.cli import build_cli
from connector_core.cli.app import COMMANDS
from connector_core.cli.commands import SCHEMA_COMMANDS
from connector_core.cli.lazy import LazyGroup, load
from connector_core.cli.sync import SYNC_COMMANDS
from connector_core.credentials import (
    NETWORK,
    NULL_BACKEND,
    get_secret,
    service_name,
    set_secret,
)
from connector_core.plugins import make_plugin_manager, register_builtin
from tests.integration.test_cli import run

#: What `connector --help` and `--version` must not import: the state store, HTTP, the
#: keyring, pydantic (config, policies), the policy engine, the queue (Celery, kombu, the
#: Redis client), and the plugins' adapters.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "requests",
    "urllib3",
    "keyring",
    "pydantic",
    "yaml",
    "croniter",
    "celery",
    "kombu",
    "redis",
    "connector_core.adapters",
    "connector_core.config",
    "connector_core.credentials",
    "connector_core.policy",
    "connector_core.sync",
    "connector_csv.adapter",
    "connector_civicrm.adapter",
    "connector_nextcloud.adapter",
    "connector_nextcloud.files",
)


def imported_by(*args: str, cwd: Path | None = None) -> set[str]:
    """The modules a fresh interpreter holds after `connector ARGS`."""
    probe = textwrap.dedent(
        """
        import json, sys
        from connector_core.cli import main
        try:
            main(sys.argv[1:])
        except SystemExit:
            pass
        print(json.dumps(sorted(sys.modules)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True, cwd=cwd
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"], []])
def test_help_and_version_import_no_engine(args: list[str]) -> None:
    modules = imported_by(*args)
    assert heavy(modules) == []
    assert "connector_core.cli.sync" not in modules


def test_a_command_s_help_imports_its_own_module_only() -> None:
    modules = imported_by("adapters", "--help")
    assert "connector_core.cli.commands" in modules
    assert {"connector_core.cli.sync", "connector_core.cli.policy"}.isdisjoint(modules)
    assert "sqlalchemy" not in modules


def test_help_lists_every_command_with_its_own_summary(runner: CliRunner) -> None:
    result = run(runner, "--help")
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        short = load(COMMANDS[name].target).get_short_help_str(45)
        assert f"  {name} " in result.output
        assert short.rstrip(".")[:30] in result.output


@pytest.mark.parametrize(
    ("table", "name"),
    [(COMMANDS, n) for n in COMMANDS] + [(SCHEMA_COMMANDS, n) for n in SCHEMA_COMMANDS],
)
def test_each_summary_is_its_command_s_help(table: dict[str, object], name: str) -> None:
    entry = COMMANDS.get(name) if table is COMMANDS else SCHEMA_COMMANDS[name]
    assert entry is not None
    command = load(entry.target)
    assert command.name == name
    stand_in = click.Command(name, help=entry.summary)
    for limit in (30, 45, 80, 1000):
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)


def _module_commands() -> set[click.Command]:
    """Every command defined at the top of a module in connector_core.cli, minus subcommands
    that their group holds."""
    found: set[click.Command] = set()
    children: set[click.Command] = set()
    for info in pkgutil.iter_modules(connector_core.cli.__path__):
        module = importlib.import_module(f"connector_core.cli.{info.name}")
        for value in vars(module).values():
            if value is cli_app.cli or not isinstance(value, click.Command):
                continue  # the top-level group holds whatever commands were loaded so far
            found.add(value)
            if isinstance(value, click.Group):
                # a lazy group's `commands` also holds the lazy ones earlier calls loaded:
                # those are in its table, not its children defined here
                lazy = value.lazy if isinstance(value, LazyGroup) else {}
                children.update(c for n, c in value.commands.items() if n not in lazy)
    return found - children


def test_every_command_the_modules_define_is_in_a_lazy_table() -> None:
    # A new command added to a module (or to SYNC_COMMANDS) must be added to COMMANDS too.
    listed = {load(e.target) for e in [*COMMANDS.values(), *SCHEMA_COMMANDS.values()]}
    assert set(SYNC_COMMANDS) <= listed
    assert _module_commands() == listed


class Acme:
    """A plugin that adds a command, and one named as a built-in (which stays the built-in)."""

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command("acme-status")
        def acme_status() -> None:
            """Show the ACME service status."""
            click.echo("acme is fine")

        @cli.command("run")
        def not_run() -> None:
            """Not the real run."""


@pytest.fixture
def acme(monkeypatch: pytest.MonkeyPatch) -> None:
    def manager(**kwargs: object) -> object:
        pm = make_plugin_manager(entry_points=False, **kwargs)  # type: ignore[arg-type]
        register_builtin(pm, Acme(), "acme")
        return pm

    monkeypatch.setattr(cli_app, "make_plugin_manager", manager)


@pytest.mark.usefixtures("acme")
def test_plugin_commands_are_listed_and_run(runner: CliRunner) -> None:
    listing = run(runner, "--help")
    assert "acme-status  Show the ACME service status." in listing.output
    assert "Not the real run" not in listing.output
    result = run(runner, "acme-status")
    assert (result.exit_code, result.output) == (0, "acme is fine\n")
    assert build_cli([]).get_command(click.Context(build_cli([])), "run") is load(
        COMMANDS["run"].target
    )


@pytest.mark.usefixtures("acme")
def test_a_disabled_plugin_s_commands_are_gone(runner: CliRunner) -> None:
    assert "acme-status" not in run(runner, "--disable-plugin", "acme", "--help").output
    result = run(runner, "--disable-plugin", "acme", "acme-status")
    assert result.exit_code == 2
    assert "No such command 'acme-status'" in result.output
    assert run(runner, "acme-status").exit_code == 0  # the next call finds it again


def test_a_run_imports_only_the_adapters_its_config_uses(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo network has CSV connections only: a run does not import the CiviCRM or
    Nextcloud adapters (nor requests), while `connector adapters` lists every one."""
    monkeypatch.setenv("CONNECTOR_DEMO_HASH_KEY", "demo-hash-key-for-tests")
    modules = imported_by("run", "organizers-north", "--dry-run", cwd=demo)
    assert "connector_csv.adapter" in modules
    unused = {
        "connector_civicrm.adapter",
        "connector_nextcloud.adapter",
        "connector_nextcloud.files",
    }
    assert not unused & modules
    assert "requests" not in modules
    assert "celery" not in modules  # worker mode's: with a queue only
    assert unused <= imported_by("adapters", cwd=demo)


def test_an_unchanged_run_on_sqlite_loads_only_what_it_uses(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite store never needs PostgreSQL's statement classes (about 17 ms to import),
    and a run needs no policy tests."""
    monkeypatch.setenv("CONNECTOR_DEMO_HASH_KEY", "demo-hash-key-for-tests")
    imported_by("run", "organizers-north", cwd=demo)  # the first run shares
    modules = imported_by("run", "organizers-north", cwd=demo)
    assert "connector_core.sync.state" in modules
    assert not {m for m in modules if m.startswith("sqlalchemy.dialects.postgresql")}
    assert "connector_core.policy.policytest" not in modules  # `connector policy test`'s


def test_a_keyring_named_null_is_never_loaded_and_any_other_is_read(
    demo: Path, monkeypatch: pytest.MonkeyPatch, file_keyring: PlaintextKeyring
) -> None:
    """keyring (and what it loads: 0.03-0.05 s) is imported when a secret is read from it. A
    keyring the environment names null could only answer None: a run then reads its ledger
    key from the variable without loading keyring, and does exactly what it did before."""
    monkeypatch.setenv("CONNECTOR_DEMO_HASH_KEY", "demo-hash-key-for-tests")
    first = _run_probe(demo)  # the tests' file keyring: the ledger key generated into it
    assert first == [0, True]
    key = file_keyring.get_password(service_name("Demo Climate Network", NETWORK), "ledger_key")
    assert key
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", NULL_BACKEND)
    monkeypatch.setenv("CONNECTOR_SECRET_NETWORK_LEDGER_KEY", key)
    assert _run_probe(demo) == [0, False]  # the same ledger, its key from the variable
    monkeypatch.setenv("CONNECTOR_SECRET_NETWORK_LEDGER_KEY", "not the key of this ledger")
    assert _run_probe(demo)[0] == 3  # a wrong key is still refused: the null keyring is empty


def _run_probe(cwd: Path) -> list[object]:
    """`connector run organizers-north` in a fresh interpreter: its exit status, and whether
    it imported keyring."""
    probe = textwrap.dedent(
        """
        import json, sys
        from connector_core.cli import main
        try:
            main(["run", "organizers-north"])
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        print(json.dumps([code, "keyring" in sys.modules]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=cwd
    )
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_a_keyring_set_in_the_process_is_read_even_if_the_environment_names_null(
    monkeypatch: pytest.MonkeyPatch, file_keyring: PlaintextKeyring
) -> None:
    """Once keyring is loaded, the backend set in the process comes first, as in keyring."""
    set_secret("Net", "crm", "api_key", "a-secret-value-of-crm")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", NULL_BACKEND)
    assert get_secret("Net", "crm", "api_key") == "a-secret-value-of-crm"


def _backend_chosen(home: Path, *imports: str) -> list[str]:
    """The keyring backend a fresh interpreter detects after `imports`, and whether it
    looked for Apple's libraries (keyring's macOS bindings do on import, running ldconfig or
    gcc to do so)."""
    probe = "; ".join(
        [
            "import ctypes.util, os, sys",
            "looked = []",
            "find = ctypes.util.find_library",
            "ctypes.util.find_library = lambda name: looked.append(name) or find(name)",
            "os.environ.pop('PYTHON_KEYRING_BACKEND', None)",
            "os.environ['XDG_CONFIG_HOME'] = os.environ['XDG_DATA_HOME'] = sys.argv[1]",
            *(f"import {name}" for name in imports),
            "import keyring",
            "b = keyring.get_keyring()",
            "print(type(b).__module__ + '.' + type(b).__qualname__)",
            "print(bool(looked))",
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", probe, str(home)], capture_output=True, text=True, check=True
    ).stdout.split()


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS uses the Security bindings")
def test_the_keyring_backend_is_found_without_the_macos_bindings(tmp_path: Path) -> None:
    chosen, bindings = _backend_chosen(tmp_path, "connector_core.credentials")
    assert bindings == "False"
    assert chosen == _backend_chosen(tmp_path)[0]  # the backend keyring alone picks


def test_the_console_script_exits_as_main_does_with_its_objects_frozen() -> None:
    """`connector` (and `python -m connector_core`) is console(): main's exit status, the
    young objects collected every 10,000 allocations, every object still alive frozen on the
    way out (the interpreter's last collections skip them)."""
    probe = textwrap.dedent(
        """
        import gc, json, sys
        from connector_core.cli import console
        try:
            console()
        except SystemExit as exit_:
            young = gc.get_threshold()[0]
            print(json.dumps([exit_.code, gc.get_freeze_count() > 0, young]))
        """
    )
    for args, code in ((["--help"], 0), (["no-such-command"], 2)):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True
        )
        assert json.loads(done.stdout.splitlines()[-1]) == [code, True, 10_000]
    scripts = importlib.metadata.entry_points(group="console_scripts", name="connector")
    assert [e.value for e in scripts] == ["connector_core.cli:console"]
    main_module = Path(__file__).parents[2] / "connector_core" / "__main__.py"
    assert "console()" in main_module.read_text(encoding="utf-8")
