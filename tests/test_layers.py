"""The layering of DESIGN.md §3, checked on every import statement of the engine and the plugins.

Who may import whom:

- ``cli/`` → anything in ``connector_core``; nothing imports ``cli/`` (``__main__`` is the
  program, not a module anyone imports).
- ``sync/`` → ``policy/`` and the core modules. ``policy/`` → the core modules only.
- the core modules (``connector_core/*.py``) → each other only.
- ``testing/`` (the conformance and crash kits) → the core modules and ``sync/``, which the
  crash kit drives like the runner does.
- a plugin → the core modules and ``testing/`` only: never ``policy/``, ``sync/``, ``cli/``
  or another plugin; the engine never imports a plugin.

Imports inside functions count too (a lazy import is still an import).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED: dict[str, frozenset[str]] = {
    "cli": frozenset({"cli", "sync", "policy", "core", "testing"}),
    "sync": frozenset({"sync", "policy", "core"}),
    "policy": frozenset({"policy", "core"}),
    "core": frozenset({"core"}),
    "testing": frozenset({"testing", "core", "sync"}),
    "plugin": frozenset({"core", "testing"}),
}
_PACKAGES = ("cli", "sync", "policy", "testing")


def _layer(module: str) -> str | None:
    """The layer of a dotted module name; None outside the product (stdlib, third party)."""
    parts = module.split(".")
    if parts[0] == "connector_core":
        return parts[1] if len(parts) > 1 and parts[1] in _PACKAGES else "core"
    if parts[0].startswith("connector_"):
        return f"plugin:{parts[0]}"
    return None


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.glob("connector_core/**/*.py")):
        yield ".".join(path.relative_to(ROOT).with_suffix("").parts), path
    for path in sorted(ROOT.glob("plugins/*/connector_*/**/*.py")):
        yield ".".join(path.relative_to(ROOT).with_suffix("").parts[2:]), path


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _allowed(source: str, target: str) -> bool:
    """May a module of layer `source` import one of layer `target`?"""
    if target == source:
        return True
    allowed = ALLOWED["plugin" if source.startswith("plugin:") else source]
    return not target.startswith("plugin:") and target in allowed


def _violations() -> Iterator[str]:
    for module, path in _modules():
        if module == "connector_core.__main__":
            continue
        source = _layer(module.removesuffix(".__init__"))
        assert source is not None
        for line, name in _imports(path):
            target = _layer(name)
            if target is None:
                continue
            if not _allowed(source, target):
                yield f"{path.relative_to(ROOT)}:{line}: {source} imports {name} ({target})"


def test_modules_are_found() -> None:
    found = dict(_modules())
    assert "connector_core.sync.runner" in found
    assert "connector_csv.adapter" in found
    assert "connector_civicrm.adapter" in found


def test_the_layering_of_design_section_3_holds() -> None:
    assert list(_violations()) == []


@pytest.mark.parametrize(
    ("module", "imported", "verdict"),
    [
        ("connector_core.policy.compiler", "connector_core.sync.state", False),
        ("connector_core.config", "connector_core.policy.loader", False),
        ("connector_csv.adapter", "connector_core.sync.runner", False),
        ("connector_csv.adapter", "connector_civicrm.adapter", False),
        ("connector_core.plugins", "connector_csv", False),
        ("connector_core.sync.runner", "connector_core.policy.compiler", True),
        ("connector_csv.adapter", "connector_core.adapters", True),
    ],
)
def test_the_rule_itself(module: str, imported: str, verdict: bool) -> None:
    """The checker would catch what DESIGN.md forbids (a test that can fail)."""
    source, target = _layer(module), _layer(imported)
    assert source is not None
    assert target is not None
    assert _allowed(source, target) is verdict
