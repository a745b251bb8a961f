"""The ``connector`` command: a thin shell that parses, calls the engine and renders."""

from __future__ import annotations

import gc
import io
import sys
from collections.abc import Sequence
from typing import Any

import click

from connector_core.cli.app import App, ConnectorGroup, cli
from connector_core.scrub import scrub_excepthook

__all__ = ["App", "build_cli", "cli", "console", "main"]


def _disabled_from_argv(argv: Sequence[str]) -> list[str]:
    """`--disable-plugin` values, read before click parses so plugin commands can be skipped."""
    names: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--disable-plugin" and i + 1 < len(argv):
            names.append(argv[i + 1])
        elif arg.startswith("--disable-plugin="):
            names.append(arg.split("=", 1)[1])
    return names


def build_cli(argv: Sequence[str]) -> click.Group:
    """The command group: core commands, and those plugins add via ``register_commands``.

    Nothing is imported here: each core command's module when it runs, the plugins when a
    name is not a core command or the list of commands is shown.
    """
    group = cli
    assert isinstance(group, ConnectorGroup)
    group.reset(blocked=_disabled_from_argv(argv))
    return group


def main(argv: Sequence[str] | None = None) -> Any:
    """Console entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    sys.excepthook = scrub_excepthook  # an internal error's traceback, scrubbed of secrets
    return build_cli(args).main(args=args, prog_name="connector")


def console() -> None:
    """The ``connector`` console script (and ``python -m connector_core``): :func:`main` in
    a process of its own, which it leaves as :func:`main` does (SystemExit).

    The cyclic garbage collector looks at the young objects every 10,000 allocations instead
    of 700, as a run's :func:`~connector_core.sync.runner.fewer_collections` does: starting
    a command makes some hundred thousand objects that live as long as the process (modules,
    classes, schemas), and the collections as they accumulate find little to free (an
    unchanged `connector run`: 175 collections in 40 ms, 12 in 30 ms with this). On the way
    out every object still alive is frozen (:func:`gc.freeze`), so that the interpreter's
    last collections skip them: the process is about to end. The commands close their
    files, stores and connections themselves, and the interpreter's teardown still releases
    what is left by reference counting and runs the exit handlers; only its search for
    reference cycles among everything a run made is spared (about 0.07 s of an unchanged
    run of 0.6 s, more after a large one). Not for a caller that goes on (a test runner):
    frozen objects are never collected."""
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    _escaping_output()
    try:
        main()
    finally:
        gc.freeze()


def _escaping_output() -> None:
    """Let stdout and stderr write what their encoding cannot as its backslash escape
    (``\\udce9``) instead of raising in the middle of a command's output: a lone surrogate,
    which is what undecodable bytes of a file name become, or what a server's JSON may hold.
    A UTF-8 locale's stdout is strict, and under the C locale only the surrogates of
    undecodable bytes pass."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
