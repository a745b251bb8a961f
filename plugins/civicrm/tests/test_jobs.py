"""Whole sync jobs through the fake CiviCRM: CiviCRM -> CSV and CSV -> CiviCRM.

Each test writes a connector.yaml and a real policy in ``tmp_path``, loads the job as the CLI
does and runs it with ``run_job`` and a SQLite state store. The API key reaches the adapter
through ``{env: CIVI_API_KEY}``. Covered: the first run's projection, a quiet second run,
consent withdrawn at the source, runs under 10% injected transport faults (re-run until they
complete, ending exactly like a fault-free run) and a CSV -> CiviCRM run SIGKILLed at several
points (in a child process, ``civicrm_child.py``; the fake lives in this process) and re-run.

The fake has no StateProvince pseudoconstant, so ``address_primary.state_province_id:label``
(the adapter's default ``region``) always reads empty there; the jobs map ``region`` to the
country's ISO code instead and allow ``region: GB``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from connector_civicrm import CivicrmAdapter
from connector_civicrm.testing import FakeCiviCRM, Faults
from connector_civicrm.testing.store import Store
from connector_csv import CsvAdapter

from connector_core.config import load_config
from connector_core.errors import ConfigValidationError, ExitCode
from connector_core.masks import MaskContext
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.keys import target_key
from connector_core.sync.runner import RunResult, run_job
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY

CHILD = Path(__file__).with_name("civicrm_child.py")
_spec = importlib.util.spec_from_file_location("civicrm_child", CHILD)
assert _spec is not None
assert _spec.loader is not None
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

HASH_KEY = child.HASH_KEY
KEY_ENV = child.KEY_ENV
KEY_SECRET = b"civicrm job tests' key secret"  # network.key_secret: target keys use it
GROUP = "Local organizing"
PEOPLE = 60
FAULT_KINDS = ("429", "502", "503", "504", "timeout", "truncated_json")
MAX_RUNS = 20

POLICY = """\
policy: local
require_consent: [local_organizing]
rules:
  - allow: in Britain
    when: {region: GB}
fields:
  first_name: show
  last_name: show
  city: show
  phone: last4
"""

CONFIG = """\
version: 1
network: {name: CiviCRM job tests, key_secret: {env: CIVI_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm:
    adapter: civicrm
    settings:
      url: %(url)s
      api_key: {env: %(env)s}
      page_size: %(page_size)s
      timeout: %(timeout)s
      consent:
        local_organizing: {group: %(group)s}
    mapping: %(crm_mapping)s
  sheet:
    adapter: csv
    settings: {path: sheet.csv}
    mapping: %(sheet_mapping)s
jobs:
  to_sheet: {source: crm, target: sheet, policy: local.yaml}
  to_crm: {source: sheet, target: crm, policy: local.yaml}
"""

#: As a source, CiviCRM's region is the address's country (see the module's docstring).
CRM_SOURCE_MAPPING = {"region": "address_primary.country_id:abbr", "country": None}
SHEET_SOURCE_MAPPING = {"consent.local_organizing": "local_ok"}
SHEET_HEADER = ["id", "first_name", "last_name", "city", "phone", "email", "region", "local_ok"]

ADAPTERS = {"civicrm": CivicrmAdapter, "csv": CsvAdapter}


# ---- the network ----------------------------------------------------------------------------


def write_network(
    root: Path, fake: FakeCiviCRM, *, job: str, timeout: float = 5.0, page_size: int = 10
) -> None:
    """connector.yaml and the policy in `root`; `job` says which side is the source."""
    root.mkdir(parents=True, exist_ok=True)
    crm_mapping = CRM_SOURCE_MAPPING if job == "to_sheet" else {}
    sheet_mapping = SHEET_SOURCE_MAPPING if job == "to_crm" else {}
    text = CONFIG % {
        "url": fake.base_url,
        "env": KEY_ENV,
        "timeout": timeout,
        "page_size": page_size,
        "group": GROUP,
        "crm_mapping": json.dumps(crm_mapping),
        "sheet_mapping": json.dumps(sheet_mapping),
    }
    (root / "connector.yaml").write_text(text, encoding="utf-8")
    (root / "local.yaml").write_text(POLICY, encoding="utf-8")


def state_url(root: Path) -> str:
    return f"sqlite:///{root / 'state.db'}"


def load(root: Path, name: str) -> LoadedJob:
    config = load_config(root / "connector.yaml", ADAPTERS)
    return load_job(config, name, context=MaskContext.with_key(HASH_KEY))


def run(root: Path, name: str, **options: Any) -> RunResult:
    """One run of job `name`, as the CLI would do it."""
    job = load(root, name)
    store = StateStore.open(state_url(root), ledger_key=TEST_LEDGER_KEY)
    try:
        return run_job(job, store, **options)
    finally:
        job.close()
        store.close()


def run_until_done(root: Path, name: str) -> tuple[RunResult, int]:
    """Re-run until a run completes; every other run must abort cleanly (exit code 4) or
    leave only writes whose answer never came to the next run (exit code 1)."""
    for attempt in range(1, MAX_RUNS + 1):
        result = run(root, name)
        if result.aborted is None and result.exit_code == ExitCode.RECORDS_FAILED:
            assert all("the next run looks it up again" in f for f in result.failures)
            continue
        if result.aborted is None:
            assert result.exit_code == ExitCode.OK, result.failures
            return result, attempt
        assert result.exit_code == ExitCode.UNAVAILABLE, (result.aborted, result.error)
    raise AssertionError(f"{name} did not complete in {MAX_RUNS} runs")


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch, fake_civicrm: FakeCiviCRM) -> None:
    monkeypatch.setenv(KEY_ENV, fake_civicrm.api_key)
    monkeypatch.setenv("CIVI_KEY_SECRET", KEY_SECRET.decode())


def reset(fake: FakeCiviCRM, root: Path) -> None:
    """Empty the fake and `root`, keeping both addresses: the target's settings (the fake's
    URL, the CSV's absolute path) salt the projection hashes, so runs to compare share them."""
    fake.faults = None
    fake.store = Store()
    fake.clear_requests()
    shutil.rmtree(root, ignore_errors=True)


# ---- CiviCRM as the source ------------------------------------------------------------------


def seed_crm(fake: FakeCiviCRM) -> tuple[int, dict[int, int]]:
    """60 people: a third outside Britain, some never in the group, some Removed from it.

    Returns the group's id and contact ids by person number.
    """
    fake.freeze_time("2026-03-01 09:00:00")
    group = fake.add_group("local_organizing", GROUP)
    ids: dict[int, int] = {}
    for n in range(PEOPLE):
        cid = fake.add_contact(
            contact_type="Individual",
            first_name=f"First{n}",
            last_name=f"Last{n}",
            email=f"p{n}@example.org",
            phone=f"+44 113 496 {n:04d}",
            **{
                "address_primary.city": f"City {n % 7}",
                "address_primary.country_id:abbr": "GB" if n % 3 else "NL",
            },
        )
        ids[n] = cid
        fake.advance(1)  # one contact a second, as a real site's edits come
        if n % 8 == 0:
            fake.set_membership(cid, group, "Removed")
        elif n % 4:
            fake.set_membership(cid, group, "Added")
    fake.add_contact(contact_type="Organization", organization_name="Not a person")
    fake.advance(60)
    return group, ids


def shared(n: int) -> bool:
    """Whether person n is shared by the policy: in the group and in Britain."""
    return n % 4 != 0 and n % 3 != 0


def sheet_rows(root: Path) -> list[dict[str, str]]:
    with (root / "sheet.csv").open(encoding="utf-8", newline="") as text:
        return list(csv.DictReader(text))


def expected_sheet(ids: dict[int, int], people: range | list[int]) -> dict[str, dict[str, str]]:
    return {
        target_key("to_sheet", str(ids[n]), KEY_SECRET): {
            "id": target_key("to_sheet", str(ids[n]), KEY_SECRET),
            "first_name": f"First{n}",
            "last_name": f"Last{n}",
            "city": f"City {n % 7}",
            "phone": f"********{n:04d}",
        }
        for n in people
        if shared(n)
    }


def test_civicrm_to_csv_end_to_end(fake_civicrm: FakeCiviCRM, tmp_path: Path) -> None:
    fake = fake_civicrm
    group, ids = seed_crm(fake)
    write_network(tmp_path, fake, job="to_sheet")

    first = run(tmp_path, "to_sheet")
    assert first.exit_code == ExitCode.OK, (first.aborted, first.failures, first.problems)
    rows = sheet_rows(tmp_path)
    assert set(rows[0]) == {"id", "first_name", "last_name", "city", "phone"}
    assert {r["id"]: r for r in rows} == expected_sheet(ids, range(PEOPLE))
    assert len(rows) == first.counts.created == sum(shared(n) for n in range(PEOPLE))

    # A second run without changes: a handful of requests, nothing written.
    before = (tmp_path / "sheet.csv").read_bytes()
    fake.clear_requests()
    fake.advance(60)
    second = run(tmp_path, "to_sheet")
    assert second.exit_code == ExitCode.OK
    assert (second.counts.created, second.counts.updated, second.counts.deleted) == (0, 0, 0)
    assert fake.count_requests() <= 5, [(r["entity"], r["action"]) for r in fake.requests]
    assert (tmp_path / "sheet.csv").read_bytes() == before

    # Consent withdrawn at the source (group status Removed: modified_date does not move;
    # the incremental read finds it through SubscriptionHistory), and a contact edit.
    withdrawn, moved = 1, 2
    assert shared(withdrawn)
    assert shared(moved)
    fake.advance(60)
    fake.set_membership(ids[withdrawn], group, "Removed")
    fake.update_contact(ids[moved], first_name="Renamed")
    third = run(tmp_path, "to_sheet")
    assert third.exit_code == ExitCode.OK
    assert not third.full
    assert (third.counts.deleted, third.counts.updated) == (1, 1)
    expected = expected_sheet(ids, [n for n in range(PEOPLE) if n != withdrawn])
    expected[target_key("to_sheet", str(ids[moved]), KEY_SECRET)]["first_name"] = "Renamed"
    assert {r["id"]: r for r in sheet_rows(tmp_path)} == expected


# ---- CiviCRM as the target ------------------------------------------------------------------


def person_row(n: int, *, consent: str = "yes") -> list[str]:
    region = "GB" if n % 3 else "NL"
    ok = consent if n % 4 else "no"
    return [
        f"S{n:03d}",
        f"First{n}",
        f"Last{n}",
        f"City {n % 7}",
        f"+44 113 496 {n:04d}",
        f"p{n}@example.org",
        region,
        ok,
    ]


def write_sheet(root: Path, rows: list[list[str]]) -> None:
    with (root / "sheet.csv").open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([SHEET_HEADER, *rows])


def crm_contacts(fake: FakeCiviCRM) -> dict[str, dict[str, Any]]:
    """The fake's contacts that carry an external_identifier, with their location values."""
    store = fake.store
    with store.lock:
        contacts = {cid: dict(row) for cid, row in store.tables["Contact"].items()}
        located: dict[int, dict[str, Any]] = {cid: {} for cid in contacts}
        for entity, fields in (
            ("Email", ("email",)),
            ("Phone", ("phone",)),
            ("Address", ("street_address", "city", "postal_code", "country_id")),
        ):
            for row in store.tables[entity].values():
                if row["is_primary"] and row["contact_id"] in located:
                    for f in fields:
                        located[row["contact_id"]][f] = row[f]
        members = {
            (row["contact_id"], store.tables["Group"][row["group_id"]]["title"]): row["status"]
            for row in store.tables["GroupContact"].values()
        }
    out: dict[str, dict[str, Any]] = {}
    for cid, row in contacts.items():
        ext = row.get("external_identifier")
        if not ext:
            continue
        assert ext not in out, f"duplicate contacts for {ext}"
        out[ext] = {
            "first_name": row["first_name"],
            "last_name": row["last_name"],
            "is_deleted": row["is_deleted"],
            "contact_type": row["contact_type"],
            **located[cid],
            "groups": sorted((t, s) for (c, t), s in members.items() if c == cid),
        }
    return out


def assert_no_duplicates(fake: FakeCiviCRM) -> None:
    with fake.store.lock:
        exts = [r.get("external_identifier") for r in fake.store.tables["Contact"].values()]
    exts = [e for e in exts if e]
    assert len(exts) == len(set(exts))


def id_map(root: Path, name: str) -> list[tuple[Any, ...]]:
    with StateStore.open(state_url(root), ledger_key=TEST_LEDGER_KEY) as store:
        mapped = store.mapped(name, list(store.source_ids(name)))
    return sorted(
        (m.source_id, m.target_key, m.projection_hash, json.dumps(m.fields), m.policy_hash)
        for m in mapped.values()
    )


def job_cursor(root: Path, name: str) -> tuple[Any, ...]:
    with StateStore.open(state_url(root), ledger_key=TEST_LEDGER_KEY) as store:
        state = store.job_state(name)
    return (state.cursor, state.policy_hash, state.config_hash)


def test_csv_to_civicrm_end_to_end(fake_civicrm: FakeCiviCRM, tmp_path: Path) -> None:
    fake = fake_civicrm
    write_network(tmp_path, fake, job="to_crm")
    write_sheet(tmp_path, [person_row(n) for n in range(PEOPLE)])

    first = run(tmp_path, "to_crm")
    assert first.exit_code == ExitCode.OK, (first.aborted, first.failures, first.problems)
    contacts = crm_contacts(fake)
    expected_keys = {
        target_key("to_crm", f"S{n:03d}", KEY_SECRET) for n in range(PEOPLE) if shared(n)
    }
    assert set(contacts) == expected_keys
    assert first.counts.created == len(expected_keys)
    for n in range(PEOPLE):
        key = target_key("to_crm", f"S{n:03d}", KEY_SECRET)
        if key not in contacts:
            continue
        got = contacts[key]
        assert got["contact_type"] == "Individual"
        assert (got["first_name"], got["last_name"]) == (f"First{n}", f"Last{n}")
        assert got["city"] == f"City {n % 7}"
        assert got["phone"] == f"********{n:04d}"
        assert got["is_deleted"] is False
        # Only the policy's fields: no email, no street, no country.
        assert got.get("email") is None
        assert not got.get("street_address")
        assert not got.get("country_id")

    # Re-run: nothing written.
    fake.clear_requests()
    second = run(tmp_path, "to_crm")
    assert second.exit_code == ExitCode.OK
    assert (second.counts.created, second.counts.updated, second.counts.deleted) == (0, 0, 0)
    assert fake.count_requests(action="save") == 0
    assert fake.count_requests(action="create") == 0
    assert fake.count_requests(action="delete") == 0
    assert crm_contacts(fake) == contacts

    # Consent withdrawn in the sheet: the contact goes to CiviCRM's trash.
    withdrawn = 1
    assert shared(withdrawn)
    rows = [person_row(n, consent="no" if n == withdrawn else "yes") for n in range(PEOPLE)]
    write_sheet(tmp_path, rows)
    third = run(tmp_path, "to_crm")
    assert third.exit_code == ExitCode.OK
    assert (third.counts.created, third.counts.updated, third.counts.deleted) == (0, 0, 1)
    after = crm_contacts(fake)
    key = target_key("to_crm", f"S{withdrawn:03d}", KEY_SECRET)
    assert after[key]["is_deleted"] is True
    assert {k: v for k, v in after.items() if k != key} == {
        k: v for k, v in contacts.items() if k != key
    }
    assert_no_duplicates(fake)


def test_a_timeout_change_rewrites_nothing_and_records_nothing(
    fake_civicrm: FakeCiviCRM, tmp_path: Path
) -> None:
    """Seen on a real CiviCRM: after only a ``timeout:`` change a run reported "updated 6"
    and wrote 6 ledger rows with no write sent. A neutral setting changes nothing shared,
    and counts and ledger rows follow what the target acknowledged."""
    write_network(tmp_path, fake_civicrm, job="to_crm")
    write_sheet(tmp_path, [person_row(n) for n in range(PEOPLE)])
    assert run(tmp_path, "to_crm").exit_code == ExitCode.OK
    with StateStore.open(state_url(tmp_path), ledger_key=TEST_LEDGER_KEY) as store:
        rows = len(list(store.ledger_entries()))
    write_network(tmp_path, fake_civicrm, job="to_crm", timeout=9.0)
    fake_civicrm.clear_requests()
    again = run(tmp_path, "to_crm")
    assert (again.counts.updated, again.counts.created) == (0, 0)
    assert not again.full
    assert fake_civicrm.count_requests(action="save") == 0
    with StateStore.open(state_url(tmp_path), ledger_key=TEST_LEDGER_KEY) as store:
        assert len(list(store.ledger_entries())) == rows


# ---- under injected faults ------------------------------------------------------------------


def faults(seed: int) -> Faults:
    return Faults(rate=0.1, seed=seed, kinds=FAULT_KINDS, retry_after=0, timeout_delay=0.4)


@pytest.mark.parametrize("seed", [4, 8, 11])
def test_civicrm_to_csv_under_faults_ends_like_a_clean_run(
    fake_civicrm: FakeCiviCRM, tmp_path: Path, seed: int
) -> None:
    fake, root = fake_civicrm, tmp_path / "net"
    outcomes = []
    for injected in (None, seed):
        reset(fake, root)
        group, ids = seed_crm(fake)
        write_network(root, fake, job="to_sheet", timeout=0.2, page_size=3)
        fake.faults = faults(injected) if injected is not None else None
        _, runs = run_until_done(root, "to_sheet")
        # The next day: a withdrawal (group history) and an edit, also under faults.
        fake.advance(60)
        fake.set_membership(ids[1], group, "Removed")
        fake.update_contact(ids[2], first_name="Renamed")
        run_until_done(root, "to_sheet")
        injected_faults = fake.faults.injected if fake.faults else []
        fake.faults = None
        if injected is None:
            assert runs == 1
        else:
            assert injected_faults, "no fault was injected"
        outcomes.append(((root / "sheet.csv").read_bytes(), id_map(root, "to_sheet")))
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][1]) == sum(shared(n) for n in range(PEOPLE)) - 1


#: Seeds whose faults hit a Contact.save with a cut-off answer (the save happened, the run
#: aborts with exit code 4 and the next one converges); other faults are retried in-run.
@pytest.mark.parametrize("seed", [11, 15, 21])
def test_csv_to_civicrm_under_faults_ends_like_a_clean_run(
    fake_civicrm: FakeCiviCRM, tmp_path: Path, seed: int
) -> None:
    fake, root = fake_civicrm, tmp_path / "net"
    outcomes = []
    for injected in (None, seed):
        reset(fake, root)
        write_network(root, fake, job="to_crm", timeout=0.2, page_size=3)
        write_sheet(root, [person_row(n) for n in range(PEOPLE)])
        fake.faults = faults(injected) if injected is not None else None
        _, runs = run_until_done(root, "to_crm")
        # The next day: a withdrawal and an edit, also under faults.
        rows = [person_row(n, consent="no" if n == 1 else "yes") for n in range(PEOPLE)]
        rows[2][3] = "Elsewhere"
        write_sheet(root, rows)
        _, more = run_until_done(root, "to_crm")
        hit = fake.faults.injected if fake.faults is not None else []
        fake.faults = None
        if injected is None:
            assert runs + more == 2
        else:  # recovered within a run (a write looked up after a timeout) or by re-running
            assert hit, "no fault was injected: the seed no longer exercises recovery"
        assert_no_duplicates(fake)
        outcomes.append((crm_contacts(fake), id_map(root, "to_crm")))
    assert outcomes[0] == outcomes[1]


# ---- killed and re-run ----------------------------------------------------------------------


def run_child(root: Path, fake: FakeCiviCRM, kill_at: int) -> dict[str, Any] | None:
    """Run the CSV -> CiviCRM job in a fresh interpreter; None when it was killed."""
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(root), state_url(root), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, KEY_ENV: fake.api_key},
    )
    if proc.returncode == -signal.SIGKILL:
        return None
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return report


def crash_outcome(root: Path, fake: FakeCiviCRM) -> dict[str, Any]:
    assert_no_duplicates(fake)
    return {
        "contacts": crm_contacts(fake),
        "id_map": id_map(root, "to_crm"),
        "state": job_cursor(root, "to_crm"),
    }


def test_csv_to_civicrm_killed_and_rerun_converges(
    fake_civicrm: FakeCiviCRM, tmp_path: Path
) -> None:
    fake, root = fake_civicrm, tmp_path / "net"

    def network() -> None:
        reset(fake, root)
        write_network(root, fake, job="to_crm")
        write_sheet(root, [person_row(n) for n in range(PEOPLE)])

    network()
    report = run_child(root, fake, 0)
    assert report is not None
    assert report["aborted"] is None
    events = report["events"]
    expected = crash_outcome(root, fake)
    assert events >= 8, events
    for kill_at in sorted({1, 2, events // 3, events // 2, events - 1, events}):
        network()
        assert run_child(root, fake, kill_at) is None, f"the run ended before event {kill_at}"
        report = run_child(root, fake, 0)
        assert report is not None
        assert report["aborted"] is None
        assert crash_outcome(root, fake) == expected, kill_at


def test_a_job_from_a_site_whose_consent_group_was_renamed_is_refused(
    tmp_path: Path, fake_civicrm: FakeCiviCRM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CiviCRM form of the renamed consent column: every person would read as no."""
    monkeypatch.setenv(KEY_ENV, fake_civicrm.api_key)
    fake_civicrm.add_group("local", title=GROUP + " (old)")
    write_network(tmp_path, fake_civicrm, job="to_sheet")
    with pytest.raises(ConfigValidationError) as raised:
        load(tmp_path, "to_sheet")
    (problem,) = raised.value.problems
    assert problem.path == str(tmp_path / "connector.yaml")
    assert problem.line == 15
    assert f"connections.crm.settings.consent.local_organizing.group: {GROUP!r}" in str(problem)
    assert f"did you mean '{GROUP} (old)'?" in str(problem)


# ---- what a real CiviCRM 6.17.2 showed (issue 12) -------------------------------------------


def test_csv_to_civicrm_when_the_groups_it_names_already_exist(
    fake_civicrm: FakeCiviCRM, tmp_path: Path
) -> None:
    """Seen on a real CiviCRM: every write crashed (KeyError 'name', exit 1) once a group it
    names (here `group_for_writes`) existed; the run must write as when it creates it."""
    fake = fake_civicrm
    group = fake.add_group("shared_by_the_network", "Shared by the network")
    write_network(tmp_path, fake, job="to_crm")
    config = tmp_path / "connector.yaml"
    text = config.read_text(encoding="utf-8")
    setting = "      group_for_writes: Shared by the network\n      consent:\n"
    config.write_text(text.replace("      consent:\n", setting, 1), encoding="utf-8")
    write_sheet(tmp_path, [person_row(n) for n in range(PEOPLE)])

    result = run(tmp_path, "to_crm")

    assert result.exit_code == ExitCode.OK, (result.aborted, result.failures, result.problems)
    contacts = crm_contacts(fake)
    assert len(contacts) == result.counts.created == sum(shared(n) for n in range(PEOPLE))
    assert {str(c["groups"]) for c in contacts.values()} == {
        str([("Shared by the network", "Added")])
    }
    with fake.store.lock:
        assert list(fake.store.tables["Group"]) == [group]


MEMBER_POLICY = """\
policy: members
rules:
  - allow: active members
    when: {extra.civicrm.active: true}
fields:
  first_name: show
  extra.civicrm.level: show
"""


def write_member_network(root: Path, fake: FakeCiviCRM, custom: str) -> None:
    write_network(root, fake, job="to_sheet")
    config = root / "connector.yaml"
    text = config.read_text(encoding="utf-8")
    block = f"      custom_fields: {{{custom}}}\n      consent:\n"
    text = text.replace("      consent:\n", block, 1).replace("local.yaml", "members.yaml")
    config.write_text(text, encoding="utf-8")
    (root / "members.yaml").write_text(MEMBER_POLICY, encoding="utf-8")


def test_custom_fields_can_be_used_in_policies_and_are_pushed_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`custom_fields:` (documented) failed in policies with "no connection maps it"."""
    custom = {"Membership.active": "Boolean", "Membership.level": "String"}
    with FakeCiviCRM(api_key="custom-fields-api-key", custom_fields=custom) as fake:
        monkeypatch.setenv(KEY_ENV, fake.api_key)
        fake.freeze_time("2026-03-01 09:00:00")
        fake.add_group("local_organizing", GROUP)
        for n, active in enumerate((True, False, True, None)):
            values = {"Membership.active": active, "Membership.level": f"L{n}"}
            fake.add_contact(contact_type="Individual", first_name=f"P{n}", **values)
        fake.advance(60)
        write_member_network(tmp_path, fake, "active: Membership.active, level: Membership.level")

        result = run(tmp_path, "to_sheet")

        assert result.exit_code == ExitCode.OK, (result.aborted, result.failures, result.problems)
        assert sorted(r["first_name"] for r in sheet_rows(tmp_path)) == ["P0", "P2"]
        gets = [r for r in fake.requests if (r["entity"], r["action"]) == ("Contact", "get")]
        assert any(["Membership.active", "=", True] in (r["params"] or {}).get("where", [])
                   for r in gets)  # fmt: skip


def test_a_job_testing_a_custom_field_the_site_lacks_is_refused(
    fake_civicrm: FakeCiviCRM, tmp_path: Path
) -> None:
    """A real CiviCRM drops an unknown field silently: nobody matched and the job deleted the
    372 records it had shared (exit 0). The run must refuse to start, naming the line."""
    write_member_network(tmp_path, fake_civicrm, "active: Gone.active, level: Gone.level")
    with pytest.raises(ConfigValidationError) as raised:
        load(tmp_path, "to_sheet")
    text = "\n".join(str(p) for p in raised.value.problems)
    assert "connections.crm.settings.custom_fields.active: 'Gone.active'" in text
    assert "the site has no such custom field" in text


def test_a_merge_is_recorded_as_merged_and_the_survivor_is_read_again(
    fake_civicrm: FakeCiviCRM, tmp_path: Path
) -> None:
    """On CiviCRM 6.17.2 a merge moves the loser's memberships to the survivor without
    touching the survivor's modified_date, and trashes the loser. The loser's take-back must
    say merged-at-source (not a consent withdrawal) and the survivor must be read again."""
    fake = fake_civicrm
    _, ids = seed_crm(fake)
    write_network(tmp_path, fake, job="to_sheet")
    assert run(tmp_path, "to_sheet").exit_code == ExitCode.OK
    loser, survivor = 1, 4  # shared; in Britain but never in the consent group
    assert shared(loser)
    assert not shared(survivor)
    fake.advance(60)
    fake.merge(ids[loser], ids[survivor])

    result = run(tmp_path, "to_sheet")

    assert result.exit_code == ExitCode.OK, (result.aborted, result.failures, result.problems)
    with StateStore.open(state_url(tmp_path), ledger_key=TEST_LEDGER_KEY) as store:
        entries = list(store.ledger_entries(job="to_sheet"))
    [gone] = [e for e in entries if e.action == "delete"]
    assert gone.source_id == str(ids[loser])
    assert gone.reason == f"merged-at-source:{ids[survivor]}", gone.reason
    got = {r["first_name"] for r in sheet_rows(tmp_path)}
    assert f"First{survivor}" in got
    assert f"First{loser}" not in got


def test_a_write_civicrm_refuses_quoting_values_reports_none_of_them(
    fake_civicrm: FakeCiviCRM, tmp_path: Path
) -> None:
    """CiviCRM quotes what it was sent (``'…' is not a valid option for field …``): the
    failure line, ``run --json`` and the state's outstanding change carry none of it."""
    fake = fake_civicrm
    reset(fake, tmp_path)
    fake.store.strict_options = True
    write_network(tmp_path, fake, job="to_crm")
    region = "Zq Nowhereshire"
    (tmp_path / "local.yaml").write_text(
        POLICY.replace("region: GB", f"region: {region}") + "  region: show\n"
    )
    row = person_row(1)
    row[6] = region
    write_sheet(tmp_path, [row])
    result = run(tmp_path, "to_crm")
    assert result.exit_code == ExitCode.RECORDS_FAILED, (result.aborted, result.failures)
    [failure] = result.failures
    assert "is not a valid option for field state_province_id" in failure
    store = StateStore.open(state_url(tmp_path), ledger_key=TEST_LEDGER_KEY)
    try:
        stored = [o.error or "" for o in store.outstanding("to_crm").values()]
    finally:
        store.close()
    said = "\n".join([failure, *stored])
    for value in (region, "Nowhereshire", row[1], row[2], row[3], "********0001"):
        assert value not in said, (value, said)
