"""The plugin manager: entry points, blocking, hook validation, collisions, failures."""

from __future__ import annotations

from typing import Any

import pytest

from connector_core import Adapter, Page, hookimpl
from connector_core.errors import PluginError
from connector_core.plugins import (
    collect_adapters,
    collect_masks,
    disabled_from_env,
    make_plugin_manager,
    register_builtin,
)


class Named(Adapter):
    """A read-only adapter for these tests."""

    name = "named"

    def read(self, *, cursor: Any = None, fields: Any = None, where: Any = None) -> Any:
        yield Page([])


class Plugin:
    """A plugin object whose hooks return what it is given."""

    def __init__(self, adapters: list[Any] | None = None, masks: dict[str, Any] | None = None):
        self.adapters = adapters or []
        self.masks = masks or {}

    @hookimpl
    def register_adapters(self) -> list[Any]:
        return self.adapters

    @hookimpl
    def register_masks(self) -> dict[str, Any]:
        return self.masks


def test_entry_points_load_the_bundled_csv_plugin() -> None:
    pm = make_plugin_manager()
    assert pm.infos["csv"].distribution == "connector-csv"
    assert "csv" in collect_adapters(pm)


def test_blocked_plugins_are_not_loaded() -> None:
    pm = make_plugin_manager(blocked=["csv"])
    assert "csv" not in pm.infos
    assert "csv" not in collect_adapters(pm)


def test_env_var_disables_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_DISABLE_PLUGINS", "csv, other")
    assert disabled_from_env() == ["csv", "other"]
    assert "csv" not in make_plugin_manager().infos


def test_a_misspelled_hook_is_refused_with_a_suggestion() -> None:
    class Typo:
        @hookimpl
        def register_mask(self) -> dict[str, Any]:
            return {}

    pm = make_plugin_manager(entry_points=False)
    with pytest.raises(
        PluginError,
        match=r"implements unknown hook 'register_mask'; "
        r"did you mean 'register_masks'\?",
    ) as info:
        register_builtin(pm, Typo(), "typo")
    assert (
        info.value.hint == "Fix the hook's name in the plugin, or skip it with "
        "--disable-plugin typo."
    )


def test_duplicate_adapter_names_name_both_plugins() -> None:
    pm = make_plugin_manager(entry_points=False)
    register_builtin(pm, Plugin([Named]), "first")
    register_builtin(pm, Plugin([type("Again", (Named,), {})]), "second")
    with pytest.raises(PluginError, match="two plugins provide an adapter named 'named'"):
        collect_adapters(pm)


@pytest.mark.parametrize(
    ("registered", "message"),
    [
        (object, "which is not an Adapter subclass"),
        (type("Upper", (Named,), {"name": "Upper"}), "needs a lowercase identifier"),
        (type("Bad", (Named,), {"settings_model": dict}), "must subclass"),
    ],
    ids=["not-an-adapter", "bad-name", "bad-settings-model"],
)
def test_invalid_adapter_classes_are_refused(registered: Any, message: str) -> None:
    pm = make_plugin_manager(entry_points=False)
    register_builtin(pm, Plugin([registered]), "odd")
    with pytest.raises(PluginError, match=message):
        collect_adapters(pm)


def test_a_hook_that_raises_is_reported_with_its_plugin() -> None:
    class Failing:
        @hookimpl
        def register_adapters(self) -> list[Any]:
            raise RuntimeError("boom")

    pm = make_plugin_manager(entry_points=False)
    register_builtin(pm, Failing(), "failing")
    with pytest.raises(PluginError, match="failed in register_adapters: RuntimeError: boom"):
        collect_adapters(pm)


def test_masks_are_collected_and_clashes_refused() -> None:
    def shout(_params: Any) -> Any:
        return str.upper

    pm = make_plugin_manager(entry_points=False)
    register_builtin(pm, Plugin(masks={"shout": shout}), "one")
    masks = collect_masks(pm)
    assert masks["shout"] is shout
    assert {"hash", "last4", "truncate", "coarsen_location"} <= set(masks)  # the built-ins
    register_builtin(pm, Plugin(masks={"shout": shout}), "two")
    with pytest.raises(PluginError, match="two plugins provide a mask named 'shout'"):
        collect_masks(pm)


def test_a_plugin_mask_cannot_replace_a_built_in_one() -> None:
    pm = make_plugin_manager(entry_points=False)
    register_builtin(pm, Plugin(masks={"hash": lambda param, context: str}), "evil")
    with pytest.raises(PluginError, match="two plugins provide a mask named 'hash'"):
        collect_masks(pm)


def test_register_commands_adds_plugin_commands() -> None:
    import click

    class WithCommand:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command()
            def hello() -> None:
                """Say hello."""

    pm = make_plugin_manager(entry_points=False)
    register_builtin(pm, WithCommand(), "cmd")
    group = click.Group()
    pm.hook.register_commands(cli=group)
    assert "hello" in group.commands
