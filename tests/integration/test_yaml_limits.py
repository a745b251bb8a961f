"""Hostile YAML (deep nesting, huge files, alias bombs) is refused with a located error and
exit 3, by `policy check` and `run` alike: what check accepts, run loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.errors import ConfigValidationError
from connector_core.yaml_errors import MAX_DEPTH, POLICY_MAX_BYTES, load_yaml
from tests.integration.test_cli import run

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}
POLICY = "policy: organizers-north\nrequire_consent: [local_organizing]\n"


def policy_file(demo: Path) -> Path:
    return demo.parent.parent / "policies" / "organizers-north.yaml"


def check_and_run(runner: CliRunner, demo: Path, env: dict[str, str]) -> tuple[Result, Result]:
    check = run(runner, "policy", "check", str(policy_file(demo)), cwd=demo, env=env)
    ran = run(runner, "run", "organizers-north", "--dry-run", cwd=demo, env=env)
    return check, ran


def assert_refused(result: Result, *needles: str) -> None:
    assert result.exit_code == 3, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_a_deeply_nested_policy_is_refused_with_its_line(runner: CliRunner, demo: Path) -> None:
    path = policy_file(demo)
    path.write_text(POLICY + "rules:\n  - allow: x\n    when: " + "[" * 20_000 + "]" * 20_000)
    check, ran = check_and_run(runner, demo, ENV)
    for result in (check, ran):
        assert_refused(result, f"{path.name}:5:", f"more than {MAX_DEPTH} levels")


def test_an_oversized_policy_is_refused_before_parsing(runner: CliRunner, demo: Path) -> None:
    path = policy_file(demo)
    path.write_text(POLICY + "# padding\n" * (POLICY_MAX_BYTES // 10))
    check, ran = check_and_run(runner, demo, ENV)
    for result in (check, ran):
        assert_refused(result, path.name, "1 MiB", "CONNECTOR_MAX_YAML_BYTES")


def test_the_size_limit_can_be_raised(runner: CliRunner, demo: Path) -> None:
    path = policy_file(demo)
    path.write_text(path.read_text() + "# padding\n" * (POLICY_MAX_BYTES // 10))
    env = {**ENV, "CONNECTOR_MAX_YAML_BYTES": str(2 * POLICY_MAX_BYTES)}
    check, ran = check_and_run(runner, demo, env)
    assert check.exit_code == 0, check.output
    assert ran.exit_code == 0, ran.output


def test_a_bad_size_limit_is_a_config_error(runner: CliRunner, demo: Path) -> None:
    env = {**ENV, "CONNECTOR_MAX_YAML_BYTES": "lots"}
    check, _ = check_and_run(runner, demo, env)
    assert_refused(check, "CONNECTOR_MAX_YAML_BYTES")


def test_an_alias_bomb_is_refused(runner: CliRunner, demo: Path) -> None:
    path = policy_file(demo)
    lines = [POLICY + "x0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path.write_text("\n".join(lines) + "\n")
    check, ran = check_and_run(runner, demo, ENV)
    for result in (check, ran):
        assert_refused(result, f"{path.name}:", "expands to more than")


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    depth=st.integers(min_value=0, max_value=70),
    padding=st.integers(min_value=0, max_value=600),
    flow=st.booleans(),
)
def test_what_check_accepts_run_loads(
    runner: CliRunner, demo: Path, depth: int, padding: int, flow: bool
) -> None:
    """Nesting and size around the limits (a 4,000-byte limit here): check and run agree."""
    condition = "{region: North}"
    for _ in range(depth):
        condition = f"{{all: [{condition}]}}" if flow else f"{{not: {condition}}}"
    text = (
        POLICY
        + f"rules:\n  - allow: supporters in the North\n    when: {condition}\n"
        + "fields: {first_name: show, city: show}\n"
        + "# padding padding padding\n" * padding
    )
    policy_file(demo).write_text(text)
    env = {**ENV, "CONNECTOR_MAX_YAML_BYTES": "4000"}
    (demo / "connector.yaml").write_text(CONFIG)
    check, ran = check_and_run(runner, demo, env)
    assert isinstance(check.exception, SystemExit | None), check.exception
    assert isinstance(ran.exception, SystemExit | None), ran.exception
    assert check.exit_code in (0, 3), check.output
    if check.exit_code == 0:
        assert ran.exit_code == 0, ran.output
    else:
        assert ran.exit_code == 3, ran.output


CONFIG = """\
version: 1
network: {name: Limits, hash_key: {env: CONNECTOR_DEMO_HASH_KEY}}
consent: {purposes: {local_organizing: {description: Local}}}
connections:
  members:
    adapter: csv
    settings: {path: data/members.csv, key_column: Contact ID}
    mapping: {first_name: First Name, city: City, region: Region,
              consent.local_organizing: Local organizing OK}
  organizers-north:
    adapter: csv
    settings: {path: out/organizers-north.csv}
jobs:
  organizers-north:
    source: members
    target: organizers-north
    policy: ../../policies/organizers-north.yaml
"""


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1])
def test_the_depth_limit_counts_every_level(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n")  # the mapping is one
    if depth <= MAX_DEPTH:
        assert isinstance(load_yaml(path).data["a"], list)
    else:
        with pytest.raises(ConfigValidationError, match=f"more than {MAX_DEPTH} levels"):
            load_yaml(path)


@pytest.mark.parametrize(
    ("test_yaml", "needle"),
    [
        (
            "policy: organizers-north.yaml\ncases:\n  - name: deep\n    record: "
            + "[" * 20_000
            + "]" * 20_000
            + "\n",
            f"more than {MAX_DEPTH} levels",
        ),
        (
            "policy: organizers-north.yaml\ncases:\n  - name: x\n    record: {id: 1}\n"
            "    expect: {decision: perhaps}\n",
            "decision",
        ),
    ],
    ids=["too-deep", "bad-expectation"],
)
def test_a_policy_test_file_that_cannot_load_is_a_config_error(
    runner: CliRunner, demo: Path, test_yaml: str, needle: str
) -> None:
    path = policy_file(demo).parent / "broken_test.yaml"
    path.write_text(test_yaml)
    result = run(runner, "policy", "test", str(path), cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert needle in result.output
    assert path.name in result.output
