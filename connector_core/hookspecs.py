"""The plugin hooks. A plugin is a module or object with ``@hookimpl`` functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
import pluggy

if TYPE_CHECKING:
    from connector_core.adapters import Adapter
    from connector_core.masks import MaskContext, MaskFunction

hookspec = pluggy.HookspecMarker("connector")
hookimpl = pluggy.HookimplMarker("connector")

#: A mask factory takes the mask's parameter from the policy (``truncate: 3`` gives ``3``;
#: a bare name gives None) and a MaskContext, and returns the function applied to each
#: value as ``mask(value, record)``. It raises ValueError for a bad parameter.
MaskFactory = Callable[[Any, "MaskContext"], "MaskFunction"]


@hookspec
def register_adapters(names: frozenset[str] | None) -> list[type[Adapter]]:  # type: ignore[empty-body]
    """Return the Adapter subclasses this plugin provides (classes, not instances).

    Args:
        names: the adapter names the engine needs now (those connector.yaml uses), or None
            for every adapter. A plugin may leave out the others, so that a run does not
            import their modules; it may also ignore `names` (or not take it at all).

    Returns:
        A list of :class:`connector_core.adapters.Adapter` subclasses.
    """


@hookspec
def register_masks() -> dict[str, MaskFactory]:  # type: ignore[empty-body]
    """Return field masks by name, for policies: ``field: NAME`` or ``field: {NAME: PARAM}``.

    Returns:
        A mapping of mask name to :data:`MaskFactory`.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``connector`` command group.

    Args:
        cli: the top-level group; call ``cli.add_command`` or decorate with ``@cli.command()``.
    """
