"""The examples in docs/ are true to the code: their YAML loads with the real loader."""

from __future__ import annotations

import csv
import io
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector_core.config import load_config
from connector_core.plugins import collect_adapters, make_plugin_manager
from tests.integration.test_cli import run

REPO = Path(__file__).resolve().parent.parent


def yaml_blocks(doc: str) -> list[str]:
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    return [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def _prepare(folder: Path, text: str) -> Path:
    """Create the files a documented config refers to, then write it as connector.yaml."""
    for relative in re.findall(r"(?:path|policy|floor): ((?:data|policies|out)/[\w./-]+)", text):
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


PURPOSES = ("contact_me", "local_organizing", "share_with_partners", "public_map", "phone_banking")


@pytest.mark.parametrize(
    "doc",
    [
        "adapters/csv.md",
        "adapters/civicrm.md",
        "adapters/nextcloud.md",
        "adapters/nextcloud-files.md",
    ],
)
def test_adapter_doc_connection_examples_load(doc: str, tmp_path: Path) -> None:
    adapters = collect_adapters(make_plugin_manager())
    purposes = "".join(f"    {p}: {{description: x}}\n" for p in PURPOSES)
    blocks = [b for b in yaml_blocks(doc) if b.lstrip().startswith("connections:")]
    assert blocks, f"{doc} has no connections example"
    for block in blocks:
        text = "version: 1\nnetwork: {name: Docs}\nconsent:\n  purposes:\n" + purposes + block
        config = load_config(_prepare(tmp_path, text), adapters)
        assert config.model.connections


def test_the_demo_config_loads() -> None:
    config = load_config(
        REPO / "examples" / "demo" / "connector.yaml", collect_adapters(make_plugin_manager())
    )
    assert config.model.network.name == "Demo Climate Network"


def _documented_keys() -> set[str]:
    text = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{3,4} (\w+)$", text, re.M))


def test_every_policy_key_is_documented() -> None:
    from connector_core.masks import BUILTIN_MASKS
    from connector_core.policy.schema import policy_json_schema

    schema = policy_json_schema(BUILTIN_MASKS)
    keys = set(schema["properties"])
    keys |= set(schema["$defs"]["Rule"]["properties"])
    keys |= set(schema["$defs"]["Approval"]["properties"])
    assert keys - _documented_keys() == set()


def test_every_operator_and_mask_is_documented() -> None:
    from connector_core.masks import BUILTIN_MASKS
    from connector_core.query import Op

    text = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    for op in Op.__args__:  # type: ignore[attr-defined]
        assert f"{op}:" in text or f"{{{op}:" in text, op
    for mask in BUILTIN_MASKS:
        assert f"`{mask}`" in text or f"{{{mask}:" in text, mask


def test_policy_doc_examples_load_and_pass(tmp_path: Path) -> None:
    import shutil

    from connector_core.policy.loader import load_policy
    from connector_core.policy.policytest import run_test_file

    folder = tmp_path / "policies"
    shutil.copytree(REPO / "policies", folder)
    blocks = yaml_blocks("policies.md")
    policy = folder / "doc-example.yaml"
    policy.write_text(blocks[0], encoding="utf-8")
    assert load_policy(policy).name == "organizers-north"
    test_block = next(b for b in blocks if b.startswith("policy: organizers-north.yaml"))
    test_file = folder / "doc_test.yaml"
    test_file.write_text(test_block, encoding="utf-8")
    results = run_test_file(test_file)
    assert [r.differences for r in results] == [[], []]


def test_committed_json_schemas_are_current() -> None:
    """policy.schema.json and the demo's connector.schema.json match what the code generates
    (regenerate with `connector schema policy -o policy.schema.json` and, in examples/demo,
    `connector schema config -o connector.schema.json`)."""
    import json

    from connector_core.config import config_json_schema
    from connector_core.masks import BUILTIN_MASKS
    from connector_core.policy.schema import policy_json_schema

    committed = json.loads((REPO / "policy.schema.json").read_text(encoding="utf-8"))
    assert committed == policy_json_schema(BUILTIN_MASKS)
    demo = json.loads((REPO / "examples/demo/connector.schema.json").read_text(encoding="utf-8"))
    assert demo == config_json_schema(collect_adapters(make_plugin_manager()))


def test_writing_adapters_python_examples_compile_and_name_real_api() -> None:
    import ast

    from connector_core import testing
    from connector_core.testing import crash

    text = (REPO / "docs" / "writing-adapters.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    modules = {"crash": crash, "connector_core.testing": testing}
    for block in blocks:
        tree = ast.parse(block)  # a SyntaxError names the block's line
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                for alias in node.names:
                    assert hasattr(modules[node.module], alias.name), alias.name
            named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if named and node.value.id == "crash":
                assert hasattr(crash, node.attr), f"crash.{node.attr}"
    assert hasattr(crash.KillSwitch, "after")
    assert hasattr(crash.KillSwitch, "install")


def test_the_partners_example_expands_with_its_registry_and_policy(tmp_path: Path) -> None:
    """docs/partners.md: the template, its CSV registry and its policy load as documented."""
    text = (REPO / "docs" / "partners.md").read_text(encoding="utf-8")
    config_text, policy_text = yaml_blocks("partners.md")[:2]
    registry = re.search(r"```\n(name,.*?)```", text, re.S)
    assert registry is not None
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "partners.csv").write_text(registry.group(1), encoding="utf-8")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "partner-local.yaml").write_text(policy_text, encoding="utf-8")
    path = _prepare(tmp_path, config_text)
    config = load_config(path, collect_adapters(make_plugin_manager()))
    assert sorted(config.partner_jobs) == ["local.bristol", "local.leeds-north"]
    from connector_core.query import Compare
    from connector_core.sync.job import load_job_policy

    partner = config.partner_jobs["local.leeds-north"]
    policy = load_job_policy(config, partner.job.policy, partner=partner.row)
    assert policy.rules[0].condition == Compare("region", "eq", "North")


def test_the_fan_in_example_runs_as_documented(tmp_path: Path, runner: CliRunner) -> None:
    """docs/partners.md, "Fan-in": its files, run with `connector run national`, give the
    documented national file (one row per person; the said-no list and a partner's no)."""
    text = (REPO / "docs" / "partners.md").read_text(encoding="utf-8")
    section = text[text.index("## Fan-in") :]
    files = re.findall(r"`([\w./-]+)`:\n\n```(?:yaml|csv)\n(.*?)```", section, re.S)
    assert [name for name, _ in files][:2] == ["connector.yaml", "policies/leeds-up.yaml"]
    for name, body in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    (tmp_path / "out").mkdir()
    result = run(runner, "--config", str(tmp_path / "connector.yaml"), "run", "national")
    assert result.exit_code == 0, result.output
    expected = re.search(r"writes one row per person:\n\n```text\n(.*?)```", section, re.S)
    assert expected is not None
    documented = list(csv.DictReader(io.StringIO(expected.group(1))))
    with (tmp_path / "out" / "national.csv").open(encoding="utf-8", newline="") as f:
        written = [{k: v for k, v in row.items() if k != "id"} for row in csv.DictReader(f)]
    assert written == documented
