"""Fan-in jobs through the CLI: run, plan, --all, config errors with file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.fanin import FanInNetwork, cli, write_csv

ANN = {"id": "l1", "email": "ann@example.org", "first_name": "Ann", "city": "Leeds"}
ANN_Y = {"id": "y1", "email": "ANN@example.org", "last_name": "Smith", "national": "yes"}


@pytest.fixture
def net(tmp_path: Path) -> FanInNetwork:
    network = FanInNetwork(tmp_path)
    network.partner("leeds", [ANN | {"national": "yes"}])
    network.partner("york", [ANN_Y])
    return network


def test_run_and_plan_take_a_fan_in_by_name(runner: CliRunner, net: FanInNetwork) -> None:
    planned = cli(runner, net, "plan", "national", "--json")
    assert planned.exit_code == 0, planned.output
    (change,) = json.loads(planned.stdout)["changes"]
    assert change["action"] == "create"
    assert net.national() == []
    ran = cli(runner, net, "run", "national")
    assert ran.exit_code == 0, ran.output
    (row,) = net.national()
    assert (row["first_name"], row["last_name"]) == ("Ann", "Smith")


def test_run_all_runs_fan_ins_after_the_jobs(runner: CliRunner, net: FanInNetwork) -> None:
    ran = cli(runner, net, "run", "--all", "--json")
    assert ran.exit_code == 0, ran.output
    assert [r["job"] for r in json.loads(ran.stdout)] == ["national"]
    assert len(net.national()) == 1


def test_a_failing_partner_exits_1_and_names_the_partner(
    runner: CliRunner, net: FanInNetwork
) -> None:
    cli(runner, net, "run", "national")
    (net.root / "data" / "york.csv").write_text("id,email\n", encoding="utf-8")  # drifted
    ran = cli(runner, net, "run", "national")
    assert ran.exit_code == 1, ran.output
    assert "partner 'york'" in ran.output
    assert "ann@example.org" not in ran.output.lower()
    assert len(net.national()) == 1  # kept


def _break(net: FanInNetwork, old: str, new: str) -> None:
    text = net.config_path.read_text(encoding="utf-8")
    assert old in text
    net.config_path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("target: national_crm", "target: national_cmr", "unknown connection 'national_cmr'"),
        ("purpose: national", "purpose: nationl", "'nationl' is not declared"),
        ("suppress: nono", "suppress: nonoo", "unknown connection 'nonoo'"),
        ("source: york,", "source: yrok,", "unknown connection 'yrok'"),
        ("partner: york,", "partner: leeds,", "partner 'leeds' is listed twice"),
        ("partner: york,", "partner: York!,", "partner name 'York!'"),
        ('phone_country: "44"', 'phone_country: "+44"', "phone_country"),
    ],
)
def test_config_mistakes_name_the_file_and_line(
    runner: CliRunner, net: FanInNetwork, old: str, new: str, message: str
) -> None:
    _break(net, old, new)
    ran = cli(runner, net, "run", "national")
    assert ran.exit_code == 3, ran.output
    assert message in ran.output
    found = re.search(r"connector\.yaml:(\d+):\d+: ", ran.output)
    assert found is not None, ran.output
    lines = net.config_path.read_text(encoding="utf-8").splitlines()
    assert new in lines[int(found.group(1)) - 1]  # the line the admin wrote it on
    assert "Traceback" not in ran.output


def test_a_target_policy_without_the_purpose_is_refused(
    runner: CliRunner, net: FanInNetwork
) -> None:
    policy = net.root / "policies" / "national.yaml"
    policy.write_text(policy.read_text().replace("require_consent: [national]\n", ""))
    ran = cli(runner, net, "run", "national")
    assert ran.exit_code == 3, ran.output
    assert "does not require the fan-in's purpose 'national'" in ran.output
    assert "require_consent: [national]" in ran.output  # the hint


def test_partners_from_a_registry_feed_the_fan_in(runner: CliRunner, net: FanInNetwork) -> None:
    write_csv(
        net.root / "data" / "partners.csv",
        [{"name": "bradford", "region": "North"}, {"name": "sheffield", "region": "North"}],
        ["name", "region"],
    )
    (net.root / "policies" / "partner-up.yaml").write_text(
        "policy: partner-up\nrequire_consent: [national]\nrules:\n  - allow: everyone\n"
        "fields:\n  email: show\n  city: show\n",
        encoding="utf-8",
    )
    write_csv(
        net.root / "data" / "up" / "bradford.csv",
        [{"id": "b1", "email": "ann@example.org", "city": "Bradford", "national": "yes"}],
        ["id", "email", "city", "national"],
    )
    write_csv(
        net.root / "data" / "up" / "sheffield.csv",
        [{"id": "s1", "email": "eve@example.org", "city": "Sheffield", "national": "yes"}],
        ["id", "email", "city", "national"],
    )
    registry = """    partners:
      registry: data/partners.csv
      policy: policies/partner-up.yaml
      source:
        adapter: csv
        settings: {path: "data/up/{partner.name}.csv"}
        mapping: {consent.national: national}
"""
    _break(net, "    sources:\n", registry + "    sources:\n")
    ran = cli(runner, net, "run", "national")
    assert ran.exit_code == 0, ran.output
    rows = net.by_email()
    assert rows["ann@example.org"]["city"] == "Bradford"  # bradford < leeds
    assert rows["eve@example.org"]["city"] == "Sheffield"
    write_csv(net.root / "data" / "partners.csv", [{"name": "bradford"}], ["name", "region"])
    ran = cli(runner, net, "run", "national")  # sheffield left the registry: Eve goes
    assert ran.exit_code == 0, ran.output
    assert sorted(net.by_email()) == ["ann@example.org"]


def test_jobs_lists_a_fan_in_with_its_partners(runner: CliRunner, net: FanInNetwork) -> None:
    listed = cli(runner, net, "jobs", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = [r for r in json.loads(listed.stdout) if r["job"] == "national"]
    assert row["fan_in"] == ["hull", "leeds", "york"]
    assert row["target"] == "national_crm"
    text = cli(runner, net, "jobs").output
    assert "national: hull, leeds, york -> national_crm" in text


def test_two_fan_ins_writing_one_target_are_refused(runner: CliRunner, net: FanInNetwork) -> None:
    text = net.config_path.read_text(encoding="utf-8")
    block = text[text.index("  national:\n") : text.index("state:")]
    second = block.replace("  national:\n", "  regional:\n", 1)
    net.config_path.write_text(text.replace("state:", second + "state:"), encoding="utf-8")
    ran = cli(runner, net, "run", "national")
    assert ran.exit_code == 3, ran.output
    assert "fan_in.regional.target: fan-in 'national' writes connection 'national_crm'" in (
        ran.output
    )


def test_registry_mistakes_name_the_registry_line(runner: CliRunner, net: FanInNetwork) -> None:
    write_csv(
        net.root / "data" / "partners.csv",
        [{"name": "bradford"}, {"name": "Bad Name"}],
        ["name"],
    )
    (net.root / "policies" / "partner-up.yaml").write_text(
        "policy: partner-up\nrequire_consent: [national]\nrules:\n  - allow: everyone\n"
        "fields:\n  email: show\n",
        encoding="utf-8",
    )
    registry = """    partners:
      registry: data/partners.csv
      policy: policies/partner-up.yaml
      source: {adapter: csv, settings: {path: "data/up/{partner.name}.csv"}}
"""
    _break(net, "    sources:\n", registry + "    sources:\n")
    ran = cli(runner, net, "run", "national")
    assert ran.exit_code == 3, ran.output
    assert "partners.csv:3:1: name 'Bad Name' is not a partner name" in ran.output


def test_registry_partners_with_equal_values_share_one_compiled_policy(
    net: FanInNetwork,
) -> None:
    from connector_core.sync.fanin import load_fan_in

    write_csv(
        net.root / "data" / "partners.csv",
        [{"name": n, "region": r} for n, r in [("a", "North"), ("b", "South"), ("c", "North")]],
        ["name", "region"],
    )
    (net.root / "policies" / "partner-up.yaml").write_text(
        "policy: partner-up\nrequire_consent: [national]\nrules:\n  - allow: the region\n"
        "    when: {city: {partner: region}}\nfields:\n  email: show\n",
        encoding="utf-8",
    )
    registry = """    partners:
      registry: data/partners.csv
      policy: policies/partner-up.yaml
      source: {adapter: csv, settings: {path: "data/up/{partner.name}.csv"}}
"""
    _break(net, "    sources:\n", registry + "    sources:\n")
    loaded = load_fan_in(net.config(), "national")
    try:
        policies = {s.partner: p for s, _, p, _ in loaded.partners}
    finally:
        loaded.close()
    assert policies["a"] is policies["c"]
    assert policies["a"] is not policies["b"]
    assert policies["leeds"] is not policies["york"]


def test_a_misspelled_fan_in_gets_a_suggestion(runner: CliRunner, net: FanInNetwork) -> None:
    ran = cli(runner, net, "run", "nationl")
    assert ran.exit_code == 3, ran.output
    assert "no job or fan-in named 'nationl'" in ran.output
    assert "did you mean 'national'" in ran.output.lower()


def test_who_has_follows_a_partner_record_into_the_national_target(
    runner: CliRunner, net: FanInNetwork
) -> None:
    assert cli(runner, net, "run", "national").exit_code == 0
    found = cli(runner, net, "who-has", "l1", "--json")
    assert found.exit_code == 0, found.output
    (row,) = json.loads(found.stdout)
    assert row["job"] == "national"
    assert row["target"] == "national_crm"
    assert sorted(row["fields"]) == ["city", "email", "first_name", "last_name"]
    assert "national_crm (job national" in cli(runner, net, "who-has", "y1").output


def test_the_in_process_scheduler_runs_a_due_fan_in(
    net: FanInNetwork, capsys: pytest.CaptureFixture[str]
) -> None:
    """`connector schedule` (no --queue) runs a due fan-in like `run --due` does: after
    the jobs, as a fan-in (it was handed to the jobs' one-read runner, which knows no
    fan-in, and refused)."""
    from connector_core.cli.app import App
    from connector_core.cli.sync import _run_due, scheduled

    text = net.config_path.read_text(encoding="utf-8")
    net.config_path.write_text(
        text.replace(
            "    purpose: national\n", "    purpose: national\n    schedule: '*/5 * * * *'\n"
        ),
        encoding="utf-8",
    )
    app = App(net.config_path)
    assert scheduled(app) == {"national": "*/5 * * * *"}  # the scheduler wakes for it
    assert _run_due(app) == ["national"]
    (row,) = net.national()
    assert (row["first_name"], row["last_name"]) == ("Ann", "Smith")
    assert "national: read" in capsys.readouterr().out
