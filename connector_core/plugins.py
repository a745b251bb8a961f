"""The plugin manager: entry points in the group ``connector``, built-ins by the same path.

The engine never imports a plugin by name. A plugin that fails to import is reported with
its package and error while the rest still load; two adapters with one name stop the start.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

import connector_core.masks
from connector_core import hookspecs
from connector_core.errors import PluginError
from connector_core.hookspecs import MaskFactory

if TYPE_CHECKING:
    from connector_core.adapters import Adapter

GROUP = "connector"
DISABLE_ENV = "CONNECTOR_DISABLE_PLUGINS"
#: The engine's own hook implementations, registered by the same call as a plugin's.
#: They are part of the product, so --disable-plugin cannot switch them off.
CORE_PLUGINS = {"connector_core.masks": connector_core.masks}


@dataclasses.dataclass(frozen=True, slots=True)
class PluginInfo:
    """Where a loaded or failed plugin came from."""

    name: str
    distribution: str | None
    version: str | None
    module: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return dataclasses.asdict(self)


class ConnectorPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers each plugin's distribution and import failures."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: list[PluginInfo] = []

    def distribution_of(self, plugin_name: str) -> str:
        """A readable ``package (distribution)`` label for messages."""
        info = self.infos.get(plugin_name)
        if info is None:
            return plugin_name
        return f"{info.module} ({info.distribution})" if info.distribution else info.module


def disabled_from_env(environ: dict[str, str] | None = None) -> list[str]:
    """Plugin names listed in ``CONNECTOR_DISABLE_PLUGINS`` (comma or space separated)."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return [name for name in raw.replace(",", " ").split() if name]


def make_plugin_manager(
    *, blocked: Iterable[str] = (), entry_points: bool = True
) -> ConnectorPluginManager:
    """Build a fresh plugin manager: hookspecs, entry points (minus `blocked`), checks."""
    pm = ConnectorPluginManager()
    pm.add_hookspecs(hookspecs)
    for name in [*blocked, *disabled_from_env()]:
        if name not in CORE_PLUGINS:
            pm.set_blocked(name)
    for name, module in CORE_PLUGINS.items():
        pm.register(module, name=name)
        pm.infos[name] = PluginInfo(name, None, None, module.__name__)
    if entry_points:
        _load_entry_points(pm)
    _check_pending(pm)
    return pm


def _check_pending(pm: ConnectorPluginManager) -> None:
    """Fail on a hook implementation that matches no spec (a misspelled hook), naming it."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        found = re.search(r"unknown hook '(\w+)'", str(exc))
        what = f"an invalid hook: {exc}"
        if found:
            known = [n for n in vars(hookspecs) if n.startswith("register_")]
            close = difflib.get_close_matches(found.group(1), known, n=1)
            what = f"unknown hook {found.group(1)!r}" + (
                f"; did you mean {close[0]!r}?" if close else ""
            )
        raise PluginError(
            f"plugin {pm.distribution_of(name)} implements {what}",
            hint=f"Fix the hook's name in the plugin, or skip it with --disable-plugin {name}.",
        ) from None


def _load_entry_points(pm: ConnectorPluginManager) -> None:
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != GROUP or pm.is_blocked(ep.name):
                continue
            dist_name = dist.metadata["Name"]
            info = PluginInfo(ep.name, dist_name, dist.version, ep.value)
            if ep.name in pm.infos:
                pm.failures.append(
                    dataclasses.replace(
                        info,
                        error=f"another distribution ({pm.infos[ep.name].distribution}) "
                        f"already provides a plugin named {ep.name!r}",
                    )
                )
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                pm.failures.append(dataclasses.replace(info, error=f"{type(exc).__name__}: {exc}"))
                continue
            pm.infos[ep.name] = info


def register_builtin(pm: ConnectorPluginManager, plugin: object, name: str) -> None:
    """Register an in-process plugin (tests, embedding applications) by the same path."""
    pm.register(plugin, name=name)
    pm.infos[name] = PluginInfo(name, None, None, getattr(plugin, "__name__", repr(plugin)))
    _check_pending(pm)


def _call_each(pm: ConnectorPluginManager, hook: Any, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Call a hook's implementations one by one so each result is tied to its plugin;
    each gets those of `kwargs` it takes (pluggy's rule: an implementation may take fewer)."""
    for impl in reversed(hook.get_hookimpls()):
        try:
            result = impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception as exc:
            raise PluginError(
                f"plugin {pm.distribution_of(impl.plugin_name)} failed in "
                f"{hook.name}: {type(exc).__name__}: {exc}",
                hint=f"Skip it with --disable-plugin {impl.plugin_name}.",
            ) from exc
        if result is not None:
            yield impl.plugin_name, result


class Adapters(Mapping[str, "type[Adapter]"]):
    """The installed adapters by name, found as they are asked for.

    Looking one name up asks the plugins for that name only (``register_adapters(names=)``),
    so a run imports the adapters its connector.yaml uses, not every installed one;
    iterating (listing them, suggesting a name) asks for all of them. A duplicate name is
    an error when the name is looked up or everything is listed.
    """

    def __init__(self, pm: ConnectorPluginManager) -> None:
        self._pm = pm
        self._found: dict[str, type[Adapter]] = {}
        self._asked: set[str] = set()
        self._complete = False

    def __getitem__(self, name: str) -> type[Adapter]:
        if name not in self._asked and not self._complete:
            self._found.update(collect_adapters(self._pm, frozenset({name})))
            self._asked.add(name)
        return self._found[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._everything())

    def __len__(self) -> int:
        return len(self._everything())

    def _everything(self) -> dict[str, type[Adapter]]:
        if not self._complete:
            self._found = collect_adapters(self._pm)
            self._complete = True
        return self._found


def collect_adapters(
    pm: ConnectorPluginManager, names: frozenset[str] | None = None
) -> dict[str, type[Adapter]]:
    """The adapter classes the plugins provide, by name: every one, or those named in
    `names` (plugins may still return others); a duplicate name is an error."""
    found: dict[str, type[Adapter]] = {}
    owner: dict[str, str] = {}
    for plugin_name, classes in _call_each(pm, pm.hook.register_adapters, names=names):
        for cls in classes:
            _check_adapter_class(pm, plugin_name, cls)
            if cls.name in found:
                raise PluginError(
                    f"two plugins provide an adapter named {cls.name!r}: "
                    f"{pm.distribution_of(owner[cls.name])} and {pm.distribution_of(plugin_name)}",
                    hint="Uninstall one of them, or skip it with --disable-plugin NAME.",
                )
            found[cls.name] = cls
            owner[cls.name] = plugin_name
    return dict(sorted(found.items()))


def _check_adapter_class(pm: ConnectorPluginManager, plugin_name: str, cls: Any) -> None:
    from connector_core.adapters import Adapter, AdapterSettings  # pydantic: on use

    where = pm.distribution_of(plugin_name)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise PluginError(f"plugin {where} registered {cls!r}, which is not an Adapter subclass")
    name = getattr(cls, "name", None)
    if not (isinstance(name, str) and name.isidentifier() and name.islower()):
        raise PluginError(
            f"plugin {where}: adapter {cls.__qualname__} needs a lowercase "
            f"identifier as its `name`, not {name!r}"
        )
    if not issubclass(cls.settings_model, AdapterSettings):
        raise PluginError(
            f"plugin {where}: {cls.__qualname__}.settings_model must subclass "
            "connector_core.adapters.AdapterSettings"
        )


def collect_masks(pm: ConnectorPluginManager) -> dict[str, MaskFactory]:
    """Every mask factory the plugins provide, by name; a duplicate name is an error."""
    found: dict[str, MaskFactory] = {}
    owner: dict[str, str] = {}
    for plugin_name, masks in _call_each(pm, pm.hook.register_masks):
        for name, factory in masks.items():
            if name in found:
                raise PluginError(
                    f"two plugins provide a mask named {name!r}: "
                    f"{pm.distribution_of(owner[name])} and {pm.distribution_of(plugin_name)}",
                    hint="Uninstall one of them, or skip it with --disable-plugin NAME.",
                )
            found[name] = factory
            owner[name] = plugin_name
    return dict(sorted(found.items()))
