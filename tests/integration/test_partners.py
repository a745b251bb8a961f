"""Partners as data: a job template plus a partner registry expands to one job per partner."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.config import load_config
from connector_core.errors import ConfigError, ConfigValidationError
from connector_core.files import NewVersion
from connector_core.partners import PartnerRow
from connector_core.plugins import collect_adapters, make_plugin_manager
from connector_core.policy.compiler import compile_policy
from connector_core.policy.loader import load_policy
from connector_core.query import Compare
from connector_core.sync.state import StateStore
from tests.integration.test_cli import run


def held_ids(store: StateStore, job: str) -> list[str]:
    return list(store.source_ids(job))


ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}
REGIONS = ("North", "South East", "South West")

PARTNER_POLICY = """\
policy: partner-local
description: A local partner sees the supporters of its own region.
require_consent: [local_organizing]
rules:
  - allow: supporters in the partner's region
    when: {region: {partner: region}}
fields:
  first_name: show
  last_name: show
  city: show
"""

TEMPLATE = """
partners:
  local:
    registry: partners.csv
    source: members
    policy: ../../policies/partner-local.yaml
    schedule: "0 * * * *"
    target:
      adapter: csv
      settings:
        path: out/local/{partner.name}.csv
"""


def write_registry(path: Path, count: int, extra: list[list[str]] | None = None) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["name", "region", "contact"])
        for i in range(count):
            out.writerow([f"p{i:03d}", REGIONS[i % 3], f"contact{i}@example.org"])
        for row in extra or []:
            out.writerow(row)


@pytest.fixture
def network(demo: Path) -> Path:
    """The demo network plus a template `local` with 50 partners."""
    (demo.parent.parent / "policies" / "partner-local.yaml").write_text(PARTNER_POLICY)
    config = demo / "connector.yaml"
    config.write_text(config.read_text(encoding="utf-8") + TEMPLATE, encoding="utf-8")
    write_registry(demo / "partners.csv", 50)
    (demo / "out" / "local").mkdir()
    return demo


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def adapters() -> Any:
    return collect_adapters(make_plugin_manager())


def test_a_template_expands_to_one_job_per_partner(network: Path) -> None:
    config = load_config(network / "connector.yaml", adapters())
    partner_jobs = sorted(n for n in config.model.jobs if n.startswith("local."))
    assert len(partner_jobs) == 50
    assert config.job("local.p007").target == "local.p007"
    assert config.partner_jobs["local.p007"].row.values()["region"] == REGIONS[7 % 3]
    settings = config.settings["local.p007"]
    assert str(settings.path).endswith("out/local/p007.csv")  # type: ignore[attr-defined]
    # built from the template checked once, each partner's job and connection are what
    # validating them on their own gives
    base = {"base_dir": network}
    for partner in config.partner_jobs.values():
        for model in (partner.job, partner.connection):
            again = type(model).model_validate(model.model_dump(), context=base)
            assert (again, again.model_fields_set) == (model, model.model_fields_set)


def test_partners_with_equal_values_share_one_compiled_policy(network: Path) -> None:
    """50 partners in 3 regions: the template's policy is loaded and compiled 3 times (once
    per region), not 50, and each job still decides with its own region."""
    from connector_core.sync import job as jobs

    config = load_config(network / "connector.yaml", adapters())
    calls: list[Path] = []
    real = jobs.load_job_policy

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return real(*args, **kwargs)

    policies = jobs.PolicyCache(config, None, None)
    names = [f"local.p{i:03d}" for i in range(50)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobs, "load_job_policy", counted)
        loaded = [jobs.load_job(config, n, check_schema=False, policies=policies) for n in names]
    try:
        from connector_core.sync import schema_check

        checks, checked = schema_check.SourceChecks(config), []
        with pytest.MonkeyPatch.context() as patch:
            real_check = schema_check._check_needs
            patch.setattr(
                schema_check,
                "_check_needs",
                lambda *a, **k: checked.append(a[1]) or real_check(*a, **k),
            )
            # the schema check: once per source and what the policies need (the same for
            # the three regions' policies), each giving what checking it alone gives
            reports = [checks.check(job.config.source, job.source, job.policy) for job in loaded]
        assert checked == ["members"]
        for job, report in zip(loaded, reports, strict=True):
            alone = schema_check.check_source(config, job.config.source, job.source, job.policy)
            assert (report.errors, report.warnings) == (alone.errors, alone.warnings)
            report.raise_for_errors()
        assert len(calls) == 3
        assert loaded[0].policy is loaded[3].policy
        assert loaded[0].policy is not loaded[1].policy
        for n, job in enumerate(loaded):
            assert job.policy.policy.rules[0].condition == Compare("region", "eq", REGIONS[n % 3])
    finally:
        for job in loaded:
            job.close()


def test_a_load_looks_at_the_partners_shared_folder_once(
    network: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 50 partners' targets share out/local: a load looks at that folder once to check
    it is no link and once to resolve it (the one-writer rule's places), not twice per
    partner (15,000 partners: 180,000 look-ups of the same folders)."""
    import os

    folder = str(network / "out" / "local")
    looked: list[str] = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: looked.append(str(p)) or real_lstat(p))
    config = load_config(network / "connector.yaml", adapters())
    assert len([n for n in config.model.jobs if n.startswith("local.")]) == 50
    assert looked.count(folder) == 2


def test_a_load_resolves_the_networks_key_secret_once(
    network: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 partner jobs loaded together look the network's key secret up once (a keyring
    look-up each took 0.2 ms to several ms: 15,000 of them for 15,000 partners), each job
    holding it; without it, every job fails to load with the same clear error."""
    from connector_core import credentials
    from connector_core.sync import job as jobs

    config_path = network / "connector.yaml"
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace(
            "  name: Demo Climate Network\n",
            "  name: Demo Climate Network\n  key_secret: {env: TEST_PARTNERS_KEY_SECRET}\n",
            1,
        ),
        encoding="utf-8",
    )
    config = load_config(config_path, adapters())
    looked_up: list[str] = []
    real = credentials.KeyringSecrets.resolve

    def counted(self: Any, ref: Any) -> Any:
        looked_up.append(str(ref.env or ref.secret))
        return real(self, ref)

    monkeypatch.setattr(credentials.KeyringSecrets, "resolve", counted)
    names = [f"local.p{i:03d}" for i in range(50)]
    monkeypatch.setenv("TEST_PARTNERS_KEY_SECRET", "k" * 32)
    policies = jobs.PolicyCache(config, None, None)
    loaded = [jobs.load_job(config, n, check_schema=False, policies=policies) for n in names]
    try:
        assert looked_up == ["TEST_PARTNERS_KEY_SECRET"]
        assert {job.key_secret for job in loaded} == {b"k" * 32}
    finally:
        for job in loaded:
            job.close()
    monkeypatch.delenv("TEST_PARTNERS_KEY_SECRET")
    policies = jobs.PolicyCache(config, None, None)
    for name in names[:3]:
        with pytest.raises(ConfigError, match="TEST_PARTNERS_KEY_SECRET is not set"):
            jobs.load_job(config, name, check_schema=False, policies=policies)


def test_the_partner_value_is_a_typed_operand(network: Path) -> None:
    config = load_config(network / "connector.yaml", adapters())
    from connector_core.sync.job import load_job_policy

    policy = load_job_policy(
        config, config.job("local.p001").policy, partner=config.partner_jobs["local.p001"].row
    )
    assert policy.rules[0].condition == Compare("region", "eq", "South East")
    other = load_job_policy(
        config, config.job("local.p002").policy, partner=config.partner_jobs["local.p002"].row
    )
    assert policy.content_hash != other.content_hash


def _row(region: Any) -> PartnerRow:
    from connector_core.partners import Cell

    return PartnerRow(
        "p",
        {"name": Cell("p", "reg.csv", 2, 1), "region": Cell(region, "reg.csv", 2, 2)},
        "reg.csv",
        2,
    )


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.one_of(
        st.text(min_size=1),
        st.sampled_from(
            [
                "North'} or {region: {ne: null",
                "North\n  - allow: everyone",
                "{partner: region}",
                "*",
                "%",
                "null",
                "~",
            ]
        ),
    )
)
def test_no_partner_value_can_widen_the_policy(tmp_path_factory: Any, value: str) -> None:
    folder = tmp_path_factory.mktemp("p")
    path = folder / "partner.yaml"
    path.write_text(PARTNER_POLICY, encoding="utf-8")
    policy = load_policy(path, partner=_row(value))
    assert [r.condition for r in policy.rules] == [Compare("region", "eq", value)]
    compiled = compile_policy(policy)
    others = [
        {"id": "1", "region": r, "consent": {"local_organizing": {"granted": True}}}
        for r in ("North", "South", "", value + "x")
    ]
    for record in others:
        decision, _ = compiled.evaluate(record)
        assert decision.share == (record["region"] == value)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.one_of(
            st.text(max_size=8), st.integers(), st.booleans(), st.none(), st.lists(st.text())
        ),
        min_size=1,
        max_size=6,
    ),
    test=st.sampled_from(["region", "is_deceased", "city"]),
    extra=st.sampled_from(["", "  street_address: show\n", "  phone: last4\n"]),
)
def test_partners_loaded_through_one_memo_equal_each_loaded_alone(
    tmp_path_factory: Any, values: list[Any], test: str, extra: str
) -> None:
    """What PolicyMemo keeps (the floor, the fields checked against it) changes no
    partner's policy, error or warning, whatever its value."""
    from connector_core.policy.loader import PolicyMemo

    folder = tmp_path_factory.mktemp("m")
    path = folder / "partner.yaml"
    text = PARTNER_POLICY.replace("{region: {partner: region}}", f"{{{test}: {{partner: region}}}}")
    path.write_text(text + extra, encoding="utf-8")
    floor = Path(__file__).parents[2] / "policies" / "network-floor.yaml"

    def load(value: Any, memo: PolicyMemo | None) -> Any:
        try:
            return load_policy(path, partner=_row(value), floor=floor, memo=memo)
        except ConfigValidationError as err:
            return [str(p) for p in err.problems]

    def compiled(policy: Any, memo: PolicyMemo | None) -> Any:
        made = compile_policy(policy, memo=None if memo is None else memo.resolutions)
        chain = policy.chain()
        for resolution in made.resolutions.values():  # each source is of this policy's chain
            named = [(s.policy, s.path) for s in resolution.sources]
            assert named == [(p.name, p.path) for p in chain]
        records = [
            {"id": "1", test: v, "consent": {"local_organizing": {"granted": True}}}
            for v in (value, "North", None)
        ]
        # every part of each field's resolution but its mask functions (made once per memo)
        resolved = {n: dataclasses.replace(r, masks=()) for n, r in made.resolutions.items()}
        decided = [made.evaluate(r) for r in records]
        # what a compile derives from the resolutions (made once per memo) and the links
        derived = (made.pushdown, made.share_key, made.gate_key, made.gate_checks)
        return made.source, dict(made.outcomes), made.content_hash, resolved, decided, derived

    memo = PolicyMemo()
    loaded = 0
    for value in values:
        policy = load(value, memo)
        assert policy == load(value, None)
        if not isinstance(policy, list):
            assert compiled(policy, memo) == compiled(policy, None)
            loaded += 1
    chains = [key for key in memo.resolutions if key[0] != "link"]
    assert len(chains) == (loaded > 0)  # one chain of fields for every partner


def test_a_partner_value_that_is_not_valid_names_the_registry_cell(tmp_path: Path) -> None:
    path = tmp_path / "partner.yaml"
    path.write_text(
        PARTNER_POLICY.replace("{region: {partner: region}}", "{is_deceased: {partner: region}}"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigValidationError) as err:
        load_policy(path, partner=_row("North"))
    assert str(err.value.problems[0]).startswith("reg.csv:2:2: partner 'p', column 'region'")


def test_a_policy_with_partner_values_loaded_for_nobody_says_so(tmp_path: Path) -> None:
    path = tmp_path / "partner.yaml"
    path.write_text(PARTNER_POLICY, encoding="utf-8")
    with pytest.raises(ConfigValidationError) as err:
        load_policy(path)
    assert "is a partner's value" in str(err.value.problems[0])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            [["p001", "North", "x"]],
            "partners.csv:52:1: partner 'p001' is listed twice (first on line 3)",
        ),
        ([["Bad Name", "North", "x"]], "partners.csv:52:1: name 'Bad Name' is not a partner name"),
        (
            [["p900", "", "x"]],
            "partners.csv:52:2: partner 'p900', column 'region': a value is needed",
        ),
    ],
    ids=["duplicate", "bad-name", "empty-value"],
)
def test_bad_registry_rows_are_named_by_line_and_column(
    runner: CliRunner, network: Path, extra: list[list[str]], expected: str
) -> None:
    write_registry(network / "partners.csv", 50, extra)
    result = run(runner, "jobs", cwd=network, env=ENV)
    assert result.exit_code == 3
    assert expected in result.output, result.output
    assert "Traceback" not in result.output


def test_a_registry_path_holding_a_nul_is_named_by_its_line(
    runner: CliRunner, network: Path
) -> None:
    """A NUL in a registry cell (a corrupted export) that becomes a target's path is the
    registry's error, at its line, not a traceback from the file system."""
    config = network / "connector.yaml"
    text = config.read_text(encoding="utf-8")
    whole = text.replace("path: out/local/{partner.name}.csv", "path: {partner: contact}")
    config.write_text(whole, encoding="utf-8")
    with (network / "partners.csv").open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["name", "region", "contact"])
        out.writerow(["p001", "North", "out/local/p001.csv"])
        out.writerow(["p002", "North", "out/local/p\x002.csv"])
    result = run(runner, "jobs", cwd=network, env=ENV)
    assert result.exit_code == 3, result.output
    assert "partners.csv:3" in result.output
    assert "not valid for this partner: path: a path cannot hold a NUL character" in result.output


def test_an_empty_registry_stops(runner: CliRunner, network: Path) -> None:
    write_registry(network / "partners.csv", 0)
    result = run(runner, "jobs", cwd=network, env=ENV)
    assert result.exit_code == 3
    assert "lists no partner" in result.output


def test_jobs_lists_partner_jobs_with_their_template(runner: CliRunner, network: Path) -> None:
    result = run(runner, "jobs", "--json", cwd=network, env=ENV)
    assert result.exit_code == 0, result.output
    jobs = {j["job"]: j for j in json.loads(result.stdout)}
    assert len(jobs) == 52
    assert jobs["local.p003"]["template"] == "local"
    assert jobs["local.p003"]["partner"] == "p003"
    assert jobs["organizers-north"]["template"] is None


def test_run_all_shares_with_50_partners_from_one_read(
    runner: CliRunner, network: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector_csv import CsvAdapter

    reads: list[str] = []
    read = CsvAdapter.read

    def counted(self: CsvAdapter, **kwargs: Any) -> Any:
        reads.append(self.connection)
        return read(self, **kwargs)

    monkeypatch.setattr(CsvAdapter, "read", counted)
    result = run(runner, "run", "--all", "--json", cwd=network, env=ENV)
    assert result.exit_code == 0, result.output
    assert reads == ["members"]
    summaries = {s["job"]: s["counts"] for s in json.loads(result.stdout)}
    assert len(summaries) == 52
    north = rows(network / "out" / "local" / "p000.csv")
    assert north
    assert summaries["local.p000"]["created"] == len(north)
    regions = {
        (m["First Name"], m["Last Name"]): m["Region"]
        for m in rows(network / "data" / "members.csv")
    }
    assert {regions[r["first_name"], r["last_name"]] for r in north} == {"North"}
    one = run(runner, "plan", "local.p004", cwd=network, env=ENV)
    assert one.exit_code == 0, one.output


def test_a_partner_whose_file_fails_at_the_groups_commit_stops_alone_and_catches_up(
    runner: CliRunner,
    network: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partners' files are committed together (one disk sync for all of them): the
    disk filling up while p007's is written stops p007 alone, which keeps no file and no
    temporary file; the next run ends as a run that never failed."""
    import connector_csv.session

    clean = tmp_path_factory.mktemp("clean") / "examples" / "demo"
    shutil.copytree(network.parent.parent, clean.parent.parent, dirs_exist_ok=True)
    assert run(runner, "run", "--all", cwd=clean, env=ENV).exit_code == 0
    real = connector_csv.session.CsvWrites._new_version

    def disk_full(self: connector_csv.session.CsvWrites) -> NewVersion:
        new = real(self)
        if self.path.name != "p007.csv":
            return new

        def dump(out: IO[str]) -> None:
            new.dump(out)
            raise OSError(errno.ENOSPC, "No space left on device")

        return dataclasses.replace(new, dump=dump)

    monkeypatch.setattr(connector_csv.session.CsvWrites, "_new_version", disk_full)
    failed = run(runner, "run", "--all", "--json", cwd=network, env=ENV)
    assert failed.exit_code != 0, failed.output
    results = {s["job"]: s for s in json.loads(failed.stdout)}
    assert "No space left on device" in results["local.p007"]["aborted"]
    assert [job for job, r in results.items() if r["aborted"]] == ["local.p007"]
    assert results["local.p010"]["counts"]["created"] > 0
    folder = network / "out" / "local"
    assert not (folder / "p007.csv").exists()
    assert not [name for name in os.listdir(folder) if name.endswith(".tmp")]
    monkeypatch.setattr(connector_csv.session.CsvWrites, "_new_version", real)
    again = run(runner, "run", "--all", cwd=network, env=ENV)
    assert again.exit_code == 0, again.output
    for name in sorted(os.listdir(clean / "out" / "local")):  # (target ids: each store's key)
        assert _people(folder / name) == _people(clean / "out" / "local" / name), name
    with (
        StateStore.open(f"sqlite:///{network / 'state.db'}") as store,
        StateStore.open(f"sqlite:///{clean / 'state.db'}") as expected,
    ):
        for n in range(50):
            job = f"local.p{n:03d}"
            assert sorted(held_ids(store, job)) == sorted(held_ids(expected, job)), job


def _people(path: Path) -> list[tuple[str, ...]]:
    return sorted(tuple(v for k, v in row.items() if k != "id") for row in rows(path))


def test_a_partner_removed_from_the_registry_is_retired_and_its_data_taken_back(
    runner: CliRunner, network: Path
) -> None:
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    held = rows(network / "out" / "local" / "p001.csv")
    assert held
    write_registry(network / "partners.csv", 50)  # unchanged: nothing retired
    again = run(runner, "run", "--all", cwd=network, env=ENV)
    assert "retired" not in again.output
    lines = (network / "partners.csv").read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not line.startswith(("p001,", "p002,"))]
    (network / "partners.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    result = run(runner, "run", "--all", "--json", cwd=network, env=ENV)
    assert result.exit_code == 0, result.output
    summaries = {s["job"]: s["counts"] for s in json.loads(result.stdout)}
    assert summaries["local.p001"]["deleted"] == len(held)
    assert rows(network / "out" / "local" / "p001.csv") == []
    assert "local.p001" not in json.loads(run(runner, "jobs", "--json", cwd=network).stdout)
    with StateStore.open(f"sqlite:///{network / 'state.db'}") as store:
        assert store.mapped_count("local.p001") == 0
        assert store.who_has(held_ids(store, "local.p003")[0], job="local.p003")
    quiet = run(runner, "run", "--all", cwd=network, env=ENV)  # retired once, not again
    assert quiet.exit_code == 0, quiet.output
    assert "retired" not in quiet.output


def test_many_partners_leaving_at_once_wait_for_a_person(runner: CliRunner, network: Path) -> None:
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    write_registry(network / "partners.csv", 30)  # 20 of 50 gone: more than 5 and 10%
    held = run(runner, "run", "--all", cwd=network, env=ENV)
    assert held.exit_code == 5, held.output
    assert "20 of its 50 partners left the registry at once" in held.output
    assert "--accept-retire 20" in held.output
    assert rows(network / "out" / "local" / "p040.csv")  # nothing taken back
    accepted = run(runner, "run", "--all", "--accept-retire", "20", cwd=network, env=ENV)
    assert accepted.exit_code == 0, accepted.output
    assert rows(network / "out" / "local" / "p040.csv") == []
    assert rows(network / "out" / "local" / "p029.csv")


def test_a_changed_region_re_decides_the_partner(runner: CliRunner, network: Path) -> None:
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    before = rows(network / "out" / "local" / "p000.csv")
    text = (network / "partners.csv").read_text(encoding="utf-8")
    (network / "partners.csv").write_text(text.replace("p000,North", "p000,South West"))
    result = run(runner, "run", "local.p000", "--json", cwd=network, env=ENV)
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)[0]["counts"]
    assert counts["deleted"] == len(before)
    regions = {
        (m["First Name"], m["Last Name"]): m["Region"]
        for m in rows(network / "data" / "members.csv")
    }
    after = rows(network / "out" / "local" / "p000.csv")
    assert after
    assert {regions[r["first_name"], r["last_name"]] for r in after} == {"South West"}


def test_a_yaml_registry_gives_typed_values_and_refuses_structure(network: Path) -> None:
    config_path = network / "connector.yaml"
    config_path.write_text(
        config_path.read_text(encoding="utf-8").replace("partners.csv", "partners.yaml")
    )
    registry = network / "partners.yaml"
    registry.write_text(
        "partners:\n  - name: leeds\n    region: North\n  - name: york\n    region: {ne: null}\n"
    )
    with pytest.raises(ConfigValidationError) as err:
        load_config(config_path, adapters())
    assert [str(p) for p in err.value.problems] == [
        f"{registry}:5:13: column 'region': a partner's value is text, a number, true/false or "
        "a list of them"
    ]
    registry.write_text("partners:\n  - name: leeds\n    region: North\n")
    config = load_config(config_path, adapters())
    assert list(config.partner_jobs) == ["local.leeds"]


def test_a_value_inside_a_target_path_cannot_leave_its_folder(network: Path) -> None:
    config_path = network / "connector.yaml"
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text.replace("out/local/{partner.name}.csv", "out/{partner.region}.csv"))
    write_registry(network / "partners.csv", 1, [["evil", "../../etc/x", "c"]])
    with pytest.raises(ConfigValidationError) as err:
        load_config(config_path, adapters())
    assert str(err.value.problems[0]).startswith(
        f"{network / 'partners.csv'}:3:2: partner 'evil', column 'region': a value put inside"
    )


@pytest.mark.parametrize(
    ("where", "what"),
    [
        ("anchors.log", "the ledger anchors file"),
        ("state.db.locks/a.csv", "the job lock folder"),
        ("data/members.csv", "connections.members.settings.path"),
        ("connector.yaml", "connector.yaml itself"),
    ],
)
def test_a_partners_target_never_writes_the_connectors_own_files_or_a_source(
    runner: CliRunner, network: Path, where: str, what: str
) -> None:
    """The rules a hand-written target's path obeys hold for a path a registry row gives:
    refused when connector.yaml is loaded (exit 3, the registry's line), nothing written."""
    config = network / "connector.yaml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "path: out/local/{partner.name}.csv", "path: {partner: file}"
        ),
        encoding="utf-8",
    )
    with (network / "partners.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(
            [["name", "region", "file"], ["a", "North", where], ["b", "North", "out/local/b.csv"]]
        )
    before = {p: p.read_bytes() for p in network.rglob("*") if p.is_file()}
    result = run(runner, "run", "--all", cwd=network, env=ENV)
    assert result.exit_code == 3, result.output
    assert "partners.csv:2" in result.stderr
    assert what in result.stderr
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in network.rglob("*") if p.is_file()} == before


def test_a_registry_that_is_not_csv_is_an_error_naming_its_line(
    runner: CliRunner, network: Path
) -> None:
    """A stray quote that swallows the rest of a big export (a cell over the csv module's
    limit) is the registry's error at its line, never a traceback; nothing is retired."""
    registry = network / "partners.csv"
    lines = registry.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ',"' + "x" * 140_000 + '"'
    registry.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(runner, "jobs", cwd=network, env=ENV)
    assert result.exit_code == 3, result.output
    assert "partners.csv:3" in result.stderr
    assert "not valid CSV" in result.stderr
    assert "Hint: Fix the registry lines above" in result.stderr  # the registry's hint
    assert "Traceback" not in result.output


def test_a_partner_retired_and_added_again_gets_its_people_again(
    runner: CliRunner, network: Path
) -> None:
    """Retiring takes everything back and forgets the job's reads (its cursor and row
    fingerprints): back in the registry, its first run shares its people again."""
    target = network / "out" / "local" / "p001.csv"
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    before = rows(target)
    assert before
    write_registry(network / "partners.csv", 1)  # p001 (and others) leave...
    with (network / "partners.csv").open("a", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([[f"p{i:03d}", REGIONS[i % 3], "x"] for i in range(2, 50)])
    left = run(runner, "run", "--all", cwd=network, env=ENV)
    assert "local.p001: retired" in left.output, left.output
    assert rows(target) == []
    write_registry(network / "partners.csv", 50)  # ...and comes back
    for command in (["run", "local.p001"], ["run", "--all"]):
        assert run(runner, *command, cwd=network, env=ENV).exit_code == 0
        assert len(rows(target)) == len(before), command


def test_a_retirement_that_could_not_finish_is_not_reported_as_done(
    runner: CliRunner, network: Path
) -> None:
    target = network / "out" / "local" / "p001.csv"
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    saved = target.read_bytes()
    target.unlink()
    target.mkdir()  # the partner's target cannot be written now
    write_registry(network / "partners.csv", 1)
    with (network / "partners.csv").open("a", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([[f"p{i:03d}", REGIONS[i % 3], "x"] for i in range(2, 50)])
    failed = run(runner, "run", "--all", cwd=network, env=ENV)
    assert failed.exit_code != 0
    assert "local.p001: retired" not in failed.output
    assert "local.p001: not retired yet" in failed.stderr
    target.rmdir()
    target.write_bytes(saved)
    done = run(runner, "run", "--all", cwd=network, env=ENV)
    assert "local.p001: retired (left the registry)" in done.output
    assert rows(target) == []


def _by_file(network: Path, registry: list[list[str]]) -> None:
    """Partners whose registry row names their target file."""
    config = network / "connector.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("path: out/local/{partner.name}.csv", "path: {partner: file}"),
        encoding="utf-8",
    )
    with (network / "partners.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["name", "region", "file"], *registry])


def _names(path: Path) -> set[tuple[str, str]]:
    return {(r["first_name"], r["last_name"]) for r in rows(path)} if path.exists() else set()


def test_a_partner_whose_target_moves_is_taken_back_from_the_old_one(
    runner: CliRunner, network: Path
) -> None:
    local = network / "out" / "local"
    _by_file(network, [["a", "North", "out/local/a.csv"], ["b", "South West", "out/local/b.csv"]])
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    a, b = _names(local / "a.csv"), _names(local / "b.csv")
    assert a
    assert b
    # the two swap files: each must end with exactly its own people, nobody else's
    _by_file(network, [["a", "North", "out/local/b.csv"], ["b", "South West", "out/local/a.csv"]])
    swapped = run(runner, "run", "--all", cwd=network, env=ENV)
    assert swapped.exit_code == 0, swapped.output
    assert "local.a: its target moved, took back" in swapped.output
    assert (_names(local / "b.csv"), _names(local / "a.csv")) == (a, b)
    # a moves to a new file, then leaves: nothing of it is left anywhere
    moved = [["a", "North", "out/local/a-new.csv"], ["b", "South West", "out/local/a.csv"]]
    _by_file(network, moved)
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    assert (_names(local / "a-new.csv"), _names(local / "b.csv")) == (a, set())
    _by_file(network, [["b", "South West", "out/local/a.csv"]])
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    assert (_names(local / "a-new.csv"), _names(local / "a.csv")) == (set(), b)


def test_a_partner_whose_old_target_cannot_be_emptied_does_not_run_until_it_can(
    runner: CliRunner, network: Path
) -> None:
    local = network / "out" / "local"
    _by_file(network, [["a", "North", "out/local/a.csv"], ["b", "South West", "out/local/b.csv"]])
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    a = _names(local / "a.csv")
    saved = (local / "a.csv").read_bytes()
    (local / "a.csv").unlink()
    (local / "a.csv").mkdir()  # the old place cannot be written now
    moved = [["a", "North", "out/local/a-new.csv"], ["b", "South West", "out/local/b.csv"]]
    _by_file(network, moved)
    for command in (["run", "--all"], ["run", "local.a"]):
        held = run(runner, *command, cwd=network, env=ENV)
        assert held.exit_code != 0
        assert "local.a: its target moved; its old one could not be emptied" in held.stderr
        assert not (local / "a-new.csv").exists()  # nothing shared to the new place yet
    (local / "a.csv").rmdir()
    (local / "a.csv").write_bytes(saved)
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    assert (_names(local / "a.csv"), _names(local / "a-new.csv")) == (set(), a)


def test_a_partner_never_writes_where_a_leaving_partner_still_holds_records(
    runner: CliRunner, network: Path
) -> None:
    """a leaves (its retirement held by max_retire: 0) and z is given a's file: z waits
    until a's records are taken back there, never mixing the two audiences."""
    local = network / "out" / "local"
    config = network / "connector.yaml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "    registry: partners.csv\n", "    registry: partners.csv\n    max_retire: 0\n"
        ),
        encoding="utf-8",
    )
    _by_file(network, [["a", "North", "out/local/a.csv"], ["b", "South West", "out/local/b.csv"]])
    assert run(runner, "run", "--all", cwd=network, env=ENV).exit_code == 0
    a = _names(local / "a.csv")
    _by_file(
        network, [["z", "South West", "out/local/a.csv"], ["b", "South West", "out/local/b.csv"]]
    )
    held = run(runner, "run", "--all", cwd=network, env=ENV)
    assert held.exit_code != 0
    assert "local.z: its target is where local.a, which left, still holds records" in held.stderr
    assert _names(local / "a.csv") == a  # untouched: neither mixed nor taken back yet
    accepted = run(runner, "run", "--all", "--accept-retire", "1", cwd=network, env=ENV)
    assert accepted.exit_code == 0, accepted.output
    assert _names(local / "a.csv") == _names(local / "b.csv")  # z's: the South West's
