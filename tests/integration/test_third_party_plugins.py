"""Third-party plugins are real wheels installed beside the product and found by entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin_packages import adapter_source, build_wheel, install


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A private site-packages directory, added to the CLI's path through PYTHONPATH."""
    path = tmp_path / "site"
    path.mkdir()
    return path


def add_plugin(site: Path, dist: str, module: str, source: str, ep_name: str) -> None:
    wheel = build_wheel(site.parent, dist, module, source, ep_name)
    install(wheel, site)


def connector(
    site: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(site), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "connector_core", *args],
        env=environ,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_csv_is_found_through_its_entry_point(site: Path) -> None:
    result = connector(site, "adapters", "--json")
    assert result.returncode == 0, result.stderr
    csv = next(a for a in json.loads(result.stdout) if a["name"] == "csv")
    assert set(csv["capabilities"]) >= {"read", "write", "delete", "incremental"}
    assert csv["module"].startswith("connector_csv")


def test_a_third_party_adapter_is_listed(site: Path) -> None:
    add_plugin(site, "acme-connector", "acme_connector", adapter_source("acme"), "acme")
    result = connector(site, "adapters", "--json")
    assert result.returncode == 0, result.stderr
    names = [a["name"] for a in json.loads(result.stdout)]
    assert names == sorted(names)
    assert {"acme", "csv"} <= set(names)
    plugins = json.loads(connector(site, "plugins", "--json").stdout)
    acme = next(p for p in plugins if p["name"] == "acme")
    assert acme["distribution"] == "acme-connector"
    assert acme["hooks"] == ["register_adapters"]


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load(site: Path) -> None:
    add_plugin(
        site, "broken-connector", "broken_connector", "import does_not_exist_anywhere\n", "broken"
    )
    add_plugin(site, "acme-connector", "acme_connector", adapter_source("acme"), "acme")
    result = connector(site, "adapters", "--json")
    assert result.returncode == 0, result.stderr
    assert {"acme", "csv"} <= {a["name"] for a in json.loads(result.stdout)}
    listed = json.loads(connector(site, "plugins", "--all", "--json").stdout)
    broken = next(p for p in listed if p["name"] == "broken")
    assert broken["distribution"] == "broken-connector"
    assert "ModuleNotFoundError" in broken["error"]
    assert "does_not_exist_anywhere" in broken["error"]
    text = connector(site, "plugins")
    assert "broken (broken-connector) failed to load: ModuleNotFoundError" in text.stderr


def test_two_adapters_with_one_name_fail_naming_both_packages(site: Path) -> None:
    add_plugin(site, "other-csv", "other_csv", adapter_source("csv", cls="OtherCsv"), "othercsv")
    result = connector(site, "adapters")
    assert result.returncode == 3
    assert "two plugins provide an adapter named 'csv'" in result.stderr
    assert "connector_csv (connector-csv)" in result.stderr
    assert "other_csv (other-csv)" in result.stderr
    assert "Traceback" not in result.stderr
    assert connector(site, "--disable-plugin", "othercsv", "adapters").returncode == 0
    env = {"CONNECTOR_DISABLE_PLUGINS": "othercsv"}
    assert connector(site, "adapters", env=env).returncode == 0


def test_a_misspelled_hook_fails_naming_the_plugin(site: Path) -> None:
    source = adapter_source("acme", hook="register_adapter")
    add_plugin(site, "acme-connector", "acme_connector", source, "acme")
    result = connector(site, "adapters")
    assert result.returncode == 3
    assert (
        "plugin acme_connector (acme-connector) implements unknown hook "
        "'register_adapter'; did you mean 'register_adapters'?"
    ) in result.stderr
    assert "--disable-plugin acme" in result.stderr
    assert "Traceback" not in result.stderr


def test_disabling_csv_removes_its_adapter(site: Path) -> None:
    result = connector(site, "--disable-plugin", "csv", "adapters", "--json")
    assert result.returncode == 0, result.stderr
    assert "csv" not in {a["name"] for a in json.loads(result.stdout)}
