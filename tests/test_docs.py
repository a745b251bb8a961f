"""The examples in docs/ are true to the code: their YAML loads with the real loader."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from connector_core.config import load_config
from connector_core.plugins import collect_adapters, make_plugin_manager

REPO = Path(__file__).resolve().parent.parent


def yaml_blocks(doc: str) -> list[str]:
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    return [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def _prepare(folder: Path, text: str) -> Path:
    """Create the files a documented config refers to, then write it as connector.yaml."""
    for relative in re.findall(r"(?:path|policy): ((?:data|policies|out)/[\w./-]+)", text):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).touch()
    path = folder / "connector.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_admin_guide_example_config_loads(tmp_path: Path) -> None:
    full = next(b for b in yaml_blocks("admin-guide.md") if b.lstrip().startswith("#"))
    config = load_config(_prepare(tmp_path, full), collect_adapters(make_plugin_manager()))
    assert set(config.model.connections) == {"members", "organizers-north"}
    assert config.job("organizers-north").schedule == "0 * * * *"


@pytest.mark.parametrize("doc", ["adapters/csv.md"])
def test_adapter_doc_connection_examples_load(doc: str, tmp_path: Path) -> None:
    adapters = collect_adapters(make_plugin_manager())
    for block in yaml_blocks(doc):
        text = (
            "version: 1\nnetwork: {name: Docs}\nconsent:\n  purposes:\n"
            "    local_organizing: {description: x}\n" + block
        )
        config = load_config(_prepare(tmp_path, text), adapters)
        assert config.model.connections


def test_the_demo_config_loads() -> None:
    config = load_config(
        REPO / "examples" / "demo" / "connector.yaml", collect_adapters(make_plugin_manager())
    )
    assert config.model.network.name == "Demo Climate Network"
