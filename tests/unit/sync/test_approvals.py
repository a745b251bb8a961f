"""Approvals are enforced: held change sets, their binding, signed quorum, release, ledger."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import alembic.command
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.adapters import Change, WriteResult
from connector_core.errors import ConfigValidationError, ExitCode
from connector_core.signing import NAMESPACE_APPROVAL, sign
from connector_core.sync.approval_book import Statement
from connector_core.sync.approvals import (
    StatementRefused,
    statement_digest,
    statement_text,
    take_statement,
)
from connector_core.sync.migrations import alembic_config
from connector_core.sync.state import StateStore
from connector_core.testing import MemoryAdapter, reset_memory_stores
from tests.unit.sync.test_runner import ADAPTERS, MASKED_PHONE, POLICY, SECRET_VALUES, Network, key
from tests.unit.test_notify import Inbox, free_port

APPROVAL = """\
approval:
  required_for: [first_share]
  approvers: [alice, bob, chidi]
  quorum: 2
  escalate_after: 2d
  fallback_approvers: [data-team]
  expire_after: 5d
"""
T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


class People:
    """Approvers with real Ed25519 keys made by ssh-keygen, declared in connector.yaml."""

    NAMES = (("alice", "North"), ("bob", "South"), ("chidi", "Partners"), ("dana", "Data"))

    def __init__(self, root: Path) -> None:
        self.keys: dict[str, Path] = {}
        for name, _ in self.NAMES:
            path = root / f"{name}_key"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
                check=True,
            )
            self.keys[name] = path

    def yaml(self) -> str:
        lines = ["approvers:"]
        for name, org in self.NAMES:
            public = self.keys[name].with_suffix(".pub").read_text().strip()
            groups = "[data-team]" if name == "dana" else "[]"
            lines.append(f"  {name}: {{organization: {org}, email: {name}@example.org, ")
            lines[-1] += f"key: '{public}', groups: {groups}}}"
        return "\n".join(lines) + "\n"

    def statement(
        self, set_id: int, set_hash: str, name: str, decision: str = "approve"
    ) -> Statement:
        signature = sign(statement_text(set_hash, decision), self.keys[name], NAMESPACE_APPROVAL)
        return Statement(
            set_id,
            name,
            decision,
            T0,
            signature,
            statement_digest(signature),
            "fp",  # type: ignore[arg-type]
        )


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on loopback."""
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> People:
    return People(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def anet(net: Network, people: People) -> Network:
    """The runner tests' network, whose policy needs 2 of 3 approvers for first shares."""
    net.policy(POLICY + APPROVAL)
    with (net.root / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write(people.yaml())
    return net


def approve(store: StateStore, people: People, *names: str, decision: str = "approve") -> None:
    book = store.approvals()
    (aset,) = book.sets("north", ["waiting", "approved"])
    for name in names:
        book.add_statement(people.statement(aset.id, aset.set_hash, name, decision))


def test_a_first_share_waits_for_approval(anet: Network, store: StateStore) -> None:
    result = anet.run(store, now=T0)
    assert anet.target() == {}
    assert result.counts.created == 0
    assert result.counts.awaiting == 2
    assert result.exit_code == ExitCode.OK
    assert store.mapped("north", ["p1", "p2"]) == {}
    assert list(store.ledger_entries(job="north")) == []
    (aset,) = store.approvals().sets("north")
    assert aset.status == "waiting"
    assert aset.summary["changes"] == 2
    assert any("wait for approval" in m for m in result.approvals)


def test_a_rerun_keeps_the_same_set_and_writes_nothing(anet: Network, store: StateStore) -> None:
    anet.run(store, now=T0)
    result = anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert anet.target() == {}
    assert result.full  # held records are decided again
    (aset,) = store.approvals().sets("north")
    assert aset.status == "waiting"


def test_one_approval_of_two_is_not_enough(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice")
    anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert anet.target() == {}


def test_quorum_releases_exactly_the_approved_set_with_approvals_in_the_ledger(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice", "bob")
    result = anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert result.counts.created == 2
    assert set(anet.target()) == {key(store, "p1"), key(store, "p2")}
    entries = list(store.ledger_entries(job="north"))
    assert {e.source_id for e in entries} == {"p1", "p2"}
    for entry in entries:
        assert sorted(a["by"] for a in entry.approvals) == ["alice", "bob"]
        assert all(len(a["statement"]) == 64 for a in entry.approvals)
    (aset,) = store.approvals().sets("north")
    assert aset.status == "released"
    assert store.verify_ledger().ok
    again = anet.run(store, now=T0 + dt.timedelta(hours=2))
    assert again.counts.created == 0
    assert not store.approvals().sets("north", ["waiting"])


def test_the_same_person_twice_is_one_approval(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice")
    approve(store, people, "alice")
    anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert anet.target() == {}


def test_a_change_before_quorum_lapses_the_approvals(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice")
    anet.put("p1", first_name="Anabel")  # what the recipient would get changed
    result = anet.run(store, now=T0 + dt.timedelta(hours=1))
    old, new = store.approvals().sets("north")
    assert old.status == "lapsed"
    assert new.status == "waiting"
    assert any("lapsed" in m for m in result.approvals)
    approve(store, people, "bob")  # alice's approval was for the old set
    anet.run(store, now=T0 + dt.timedelta(hours=2))
    assert anet.target() == {}


def test_an_approved_set_that_changed_since_is_not_written(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice", "bob")
    anet.put("p2", first_name="Bruna")
    anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert anet.target() == {}
    statuses = [s.status for s in store.approvals().sets("north")]
    assert statuses == ["lapsed", "waiting"]


def test_a_policy_change_lapses_the_set(anet: Network, store: StateStore, people: People) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice", "bob")
    anet.policy(POLICY.replace("phone: last4", "phone: absent") + APPROVAL)
    anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert anet.target() == {}
    assert [s.status for s in store.approvals().sets("north")] == ["lapsed", "waiting"]


def test_a_statement_for_another_set_or_by_another_key_does_not_count(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    book = store.approvals()
    (aset,) = book.sets("north")
    book.add_statement(people.statement(aset.id, "0" * 64, "alice"))  # replayed from elsewhere
    forged = people.statement(aset.id, aset.set_hash, "dana")  # dana's key, alice's name
    book.add_statement(Statement(aset.id, "bob", "approve", T0, forged.signature, "x", "fp"))
    anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert anet.target() == {}


def test_withdrawals_pass_while_approvals_wait(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice", "bob")
    anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert len(anet.target()) == 2
    anet.put("p4", first_name="Dora")  # a new first share: waits
    anet.put("p1", granted=False)  # a withdrawal: goes at once
    result = anet.run(store, now=T0 + dt.timedelta(hours=2))
    assert set(anet.target()) == {key(store, "p2")}
    assert result.counts.deleted == 1
    assert result.counts.awaiting == 1


def test_a_denial_denies_and_the_same_changes_are_not_asked_again(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice")
    approve(store, people, "bob", decision="deny")
    result = anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert anet.target() == {}
    assert any("denied by bob" in m for m in result.approvals)
    anet.run(store, now=T0 + dt.timedelta(hours=2))
    assert [s.status for s in store.approvals().sets("north")] == ["denied"]


def test_a_set_nobody_decides_expires_and_is_denied(anet: Network, store: StateStore) -> None:
    anet.run(store, now=T0)
    result = anet.run(store, now=T0 + dt.timedelta(days=5))
    assert any("expired" in m for m in result.approvals)
    assert anet.target() == {}
    assert [s.status for s in store.approvals().sets("north")] == ["expired"]


def test_after_escalation_a_fallback_approver_counts(
    anet: Network, store: StateStore, people: People
) -> None:
    anet.run(store, now=T0)
    approve(store, people, "alice", "dana")  # dana is data-team, a fallback approver
    anet.run(store, now=T0 + dt.timedelta(days=1))
    assert anet.target() == {}  # not escalated yet: dana does not count
    result = anet.run(store, now=T0 + dt.timedelta(days=2, hours=1))
    assert len(anet.target()) == 2
    assert any("approved by alice, dana" in m for m in result.approvals)


def test_a_dry_run_shows_what_waits_and_changes_nothing(anet: Network, store: StateStore) -> None:
    result = anet.run(store, now=T0, dry_run=True)
    assert {c.source_id for c in result.awaiting} == {"p1", "p2"}
    assert result.planned == []
    assert store.approvals().sets("north") == []


def test_policy_approvers_must_be_declared(anet: Network) -> None:
    anet.policy(POLICY + APPROVAL.replace("bob", "bobby"))
    with pytest.raises(ConfigValidationError) as err:
        anet.job()
    assert "north.yaml:12:22:" in str(err.value)
    assert "'bobby' is not a person or group" in str(err.value)


def test_a_store_at_0007_migrates_to_the_approval_tables(state_url: str) -> None:
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:  # a store the previous version left
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0007_row_fingerprints")
        assert sa.inspect(conn).has_table("approvals")
    engine.dispose()
    with StateStore.open(state_url) as upgraded:
        assert upgraded.approvals().sets() == []
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert not inspector.has_table("approvals")
        assert {"approval_sets", "approval_members", "approval_statements"} <= set(
            inspector.get_table_names()
        )
    engine.dispose()


class DyingAdapter(MemoryAdapter):
    """A memory target whose second write call dies (a power cut mid-run)."""

    name: ClassVar[str] = "dying"
    calls: ClassVar[int] = 0

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        DyingAdapter.calls += 1
        if DyingAdapter.calls == 2:
            raise RuntimeError("power cut")
        return super().write(changes)


def test_a_release_cut_short_is_finished_by_the_next_run_under_the_same_approvals(
    anet: Network, store: StateStore, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ADAPTERS, "dying", DyingAdapter)
    anet.configure(target="dying", options={"batch_size": 1})
    with (anet.root / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write(people.yaml())
    DyingAdapter.calls = 0
    anet.run(store, now=T0)
    approve(store, people, "alice", "bob")
    with pytest.raises(RuntimeError, match="power cut"):
        anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert len(anet.target()) == 1
    DyingAdapter.calls = 10  # the power is back
    anet.run(store, now=T0 + dt.timedelta(hours=2))
    assert set(anet.target()) == {key(store, "p1"), key(store, "p2")}
    entries = list(store.ledger_entries(job="north"))
    assert sorted(e.source_id for e in entries) == ["p1", "p2"]
    assert all(sorted(a["by"] for a in e.approvals) == ["alice", "bob"] for e in entries)
    assert [s.status for s in store.approvals().sets("north")] == ["released"]


def test_approvers_are_emailed_when_a_set_waits_and_the_admin_when_it_expires(
    anet: Network, store: StateStore, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    with (anet.root / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write(
            "notifications:\n  admin: admin@example.org\n"
            f"  email: {{host: 127.0.0.1, port: {port}, security: none, "
            "sender: connector@example.org}\n"
        )
    result = anet.run(store, now=T0)
    assert not [m for m in result.approvals if "notice" in m or "email" in m]
    waiting = sorted(rcpt[0] for rcpt, _ in inbox.messages)
    assert waiting == ["alice@example.org", "bob@example.org", "chidi@example.org"]
    anet.run(store, now=T0 + dt.timedelta(days=2, hours=1))  # escalates to data-team: dana
    anet.run(store, now=T0 + dt.timedelta(days=5))
    told = [(rcpt[0], message["Subject"]) for rcpt, message in inbox.messages[3:]]
    assert told[0][0] == "dana@example.org"
    assert "waits for a fallback approver" in told[0][1]
    assert told[1][0] == "admin@example.org"
    assert "expired" in told[1][1]
    for _, message in inbox.messages:
        body = message.get_payload(decode=True).decode()
        assert "connector approvals show 1" in body
        for value in SECRET_VALUES:
            assert value not in body


@pytest.mark.parametrize(
    ("required", "edit", "waits"),
    [
        ("[new_fields]", {"first_name": "Anabel"}, False),  # a field shared before changed
        ("[field_changes]", {"first_name": "Anabel"}, True),
        ("[field_changes]", {"phone": None}, False),  # a field only taken away never waits
        ("[new_fields]", "show-phone", True),  # phone shown where it was masked
        ("[all]", {"first_name": "Anabel"}, True),
    ],
    ids=["new_fields-ignores-a-change", "field_changes", "removal", "new_fields", "all"],
)
def test_what_waits_after_the_first_share(
    net: Network,
    people: People,
    store: StateStore,
    required: str,
    edit: dict[str, Any] | str,
    waits: bool,
) -> None:
    with (net.root / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write(people.yaml())
    approval = f"approval:\n  required_for: {required}\n  approvers: [alice]\n"
    net.policy(POLICY + approval)
    assert net.run(store, now=T0).counts.created == 2 - 2 * ("all" in required)
    if "all" in required:  # the first shares waited too: approve them
        approve(store, people, "alice")
        net.run(store, now=T0)
    if edit == "show-phone":
        net.policy(POLICY.replace("phone: last4", "phone: show") + approval)
    else:
        assert isinstance(edit, dict)
        net.put("p1", **edit)
    result = net.run(store, now=T0 + dt.timedelta(hours=1))
    assert result.counts.awaiting == (1 if edit != "show-phone" else 2) * waits
    assert result.counts.updated == (0 if waits else 1 if edit != "show-phone" else 2)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(["p1", "p2", "p4"]),
                  st.sampled_from(["Ana", "Bo", "Cy"]), st.booleans()),
        st.tuples(st.just("approve"), st.sampled_from(["alice", "bob", "dana"])),
        st.tuples(st.just("deny"), st.just("chidi")),
        st.tuples(st.just("run"), st.integers(0, 3)),
    ),
    max_size=6,
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_nothing_reaches_the_target_unapproved_and_approving_everything_converges(
    people: People, ops: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reset_memory_stores()
        root = Path(tmp)
        net = Network(root)
        net.put("p1")
        net.put("p2", first_name="Bruno", city="York")
        net.policy(POLICY + APPROVAL)
        with (root / "connector.yaml").open("a", encoding="utf-8") as f:
            f.write(people.yaml())
        now = T0
        with StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=b"k" * 32) as store:
            for op in ops:
                if op[0] == "put":
                    net.put(op[1], first_name=op[2], granted=op[3])
                elif op[0] in ("approve", "deny"):
                    for aset in store.approvals().sets("north", ["waiting", "approved"]):
                        statement = people.statement(aset.id, aset.set_hash, op[1], op[0])
                        store.approvals().add_statement(statement)
                else:
                    now += dt.timedelta(days=op[1])
                    net.run(store, now=now)
                _check_every_share_was_approved(net, store)
            for _ in range(3):  # approve whatever waits now, twice over
                now += dt.timedelta(hours=1)
                net.run(store, now=now)
                for aset in store.approvals().sets("north", ["waiting", "approved"]):
                    for name in ("alice", "bob"):
                        statement = people.statement(aset.id, aset.set_hash, name)
                        store.approvals().add_statement(statement)
            _check_every_share_was_approved(net, store)
            denied = {
                m.source_id
                for s in store.approvals().sets("north", ["denied", "expired"])
                for m in store.approvals().members(s.id)
            }
            consenting = {
                str(r["id"])
                for page in net.crm.read()
                for r in page.records
                if r["consent"]["local_organizing"]["granted"]
            }
            mapped = set(store.mapped("north", consenting | denied))
            assert mapped <= consenting  # withdrawals went through
            assert consenting - mapped <= denied  # the rest was approved and written
            assert len(net.target()) == len(mapped)


def _check_every_share_was_approved(net: Network, store: StateStore) -> None:
    creates = {e.record_key: e for e in store.ledger_entries(job="north") if e.action == "create"}
    for target_key in net.target():
        entry = creates[target_key]
        assert len({a["by"] for a in entry.approvals}) >= 2


def test_a_run_killed_after_holding_a_change_forgets_it_not(
    anet: Network, store: StateStore, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ADAPTERS, "dying", DyingAdapter)
    anet.configure(target="dying", options={"batch_size": 1})
    config = anet.root / "connector.yaml"
    text = config.read_text(encoding="utf-8").replace("{store: crm}", "{store: crm, page_size: 1}")
    config.write_text(text + people.yaml(), encoding="utf-8")
    DyingAdapter.calls = -100
    anet.run(store, now=T0)
    approve(store, people, "alice", "bob")
    anet.run(store, now=T0)
    assert len(anet.target()) == 2
    anet.put("p4", first_name="Dora")  # a first share: held (page 1)
    anet.put("p2", first_name="Bruna")  # an update: written (page 2)
    anet.put("p1", first_name="Anabel")  # an update: the power is cut (page 3)
    DyingAdapter.calls = 0
    with pytest.raises(RuntimeError, match="power cut"):
        anet.run(store, now=T0 + dt.timedelta(hours=1), reconcile=False)
    assert store.mapped("north", ["p2"])["p2"].projection_hash != "?" * 64  # p2 recorded
    DyingAdapter.calls = -100
    result = anet.run(store, now=T0 + dt.timedelta(hours=2), reconcile=False)
    assert result.counts.awaiting == 1
    (waiting,) = store.approvals().sets("north", ["waiting"])
    assert [m.source_id for m in store.approvals().members(waiting.id)] == ["p4"]


def test_a_floors_approval_binds_the_policies_that_narrow_it(
    net: Network, people: People, store: StateStore
) -> None:
    floor = "policy: floor\nrules:\n  - allow: everyone\nfields:\n  first_name: show\n"
    floor += "  city: show\n  phone: show\n  region: absent\n" + APPROVAL
    (net.root / "floor.yaml").write_text(floor, encoding="utf-8")
    config = net.root / "connector.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "network: {name: Test network}", "network: {name: Test network, floor: floor.yaml}"
    )
    config.write_text(text + people.yaml(), encoding="utf-8")
    result = net.run(store, now=T0)
    assert net.target() == {}
    assert result.counts.awaiting == 2
    approve(store, people, "alice", "bob")
    net.run(store, now=T0 + dt.timedelta(hours=1))
    assert len(net.target()) == 2


def test_removing_the_approval_block_lapses_the_open_sets_and_shares(
    anet: Network, store: StateStore
) -> None:
    anet.run(store, now=T0)
    anet.policy(POLICY)
    result = anet.run(store, now=T0 + dt.timedelta(hours=1))
    assert result.counts.created == 2
    assert [s.status for s in store.approvals().sets("north")] == ["lapsed"]
    assert result.approvals == ["set #1: lapsed: the policy no longer asks for approval"]


def test_a_statement_after_expiry_or_by_a_stranger_is_refused(
    anet: Network, store: StateStore, people: People
) -> None:
    job = anet.job()
    job.close()
    anet.run(store, now=T0)
    book = store.approvals()
    (aset,) = book.sets("north")
    approval = job.policy.policy.approval
    assert approval is not None
    made = people.statement(aset.id, aset.set_hash, "alice")
    common = {
        "decision": "approve",
        "signature": made.signature,
        "approval": approval,
        "policy_hash": job.policy.content_hash,
        "approvers": job.approvers,
    }
    with pytest.raises(StatementRefused, match="has expired"):
        take_statement(book, aset, person="alice", now=T0 + dt.timedelta(days=5), **common)
    with pytest.raises(StatementRefused, match="'zoe' is not declared"):
        take_statement(book, aset, person="zoe", now=T0, **common)
    with pytest.raises(StatementRefused, match="signed by another key"):
        take_statement(book, aset, person="bob", now=T0, **common)
    take_statement(book, aset, person="alice", now=T0, **common)
    assert [s.person for s in book.statements(aset.id)] == ["alice"]


@pytest.mark.parametrize("required", ["[field_changes]", "[all]"])
def test_a_held_update_that_also_takes_a_field_back_takes_it_back_at_once(
    net: Network, people: People, store: StateStore, required: str
) -> None:
    with (net.root / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write(people.yaml())
    approval = f"approval:\n  required_for: {required}\n  approvers: [alice]\n"
    net.policy(POLICY + approval)
    net.run(store, now=T0)
    if "all" in required:
        approve(store, people, "alice")
        net.run(store, now=T0)
    assert net.target()[key(store, "p1")]["phone"] == MASKED_PHONE
    net.put("p1", first_name="Anabel", phone=None)  # a change that waits, a take-back
    result = net.run(store, now=T0 + dt.timedelta(hours=1))
    assert result.counts.awaiting == 1
    held = net.target()[key(store, "p1")]
    assert held.get("phone") is None  # the take-back did not wait
    assert held.get("first_name") is None  # the change waits (no copy of the old value)
    assert held.get("city") == "Leeds"  # what was approved and is unchanged stays
    again = net.run(store, now=T0 + dt.timedelta(hours=2))  # still held, same set
    assert again.counts.awaiting == 1
    assert again.counts.updated == 0
    assert len(store.approvals().sets("north", ["waiting"])) == 1
    approve(store, people, "alice")
    net.run(store, now=T0 + dt.timedelta(hours=3))
    assert net.target()[key(store, "p1")]["first_name"] == "Anabel"
    last = [e for e in store.ledger_entries(job="north") if e.source_id == "p1"][-1]
    assert [a["by"] for a in last.approvals] == ["alice"]
    assert store.verify_ledger().ok


def test_a_take_back_keeps_a_held_field_change_held(
    net: Network, people: People, store: StateStore
) -> None:
    """After the take-back cleared a field whose change waits, that field is still a change
    (not a new field) for a policy that holds field changes only: it never passes."""
    with (net.root / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write(people.yaml())
    approval = "approval:\n  required_for: [field_changes]\n  approvers: [alice]\n"
    net.policy(POLICY + approval)
    net.run(store, now=T0)
    net.put("p1", first_name="Anabel", phone=None)
    net.run(store, now=T0 + dt.timedelta(hours=1))
    net.put("p1", first_name="Annie", phone=None)  # changes again: the set lapses
    result = net.run(store, now=T0 + dt.timedelta(hours=2))
    assert result.counts.awaiting == 1
    assert net.target()[key(store, "p1")].get("first_name") is None


def test_statements_for_an_earlier_set_never_approve_a_later_one_with_the_same_changes(
    anet: Network, store: StateStore, people: People
) -> None:
    """A replay: p3 is approved, withdraws, consents again; the new set holds exactly what the
    old one held, but the old set's signed statements must not decide it."""
    hour = dt.timedelta(hours=1)
    anet.run(store, now=T0)
    approve(store, people, "alice", "bob")
    anet.run(store, now=T0 + hour)
    anet.put("p3")
    anet.run(store, now=T0 + 2 * hour)
    book = store.approvals()
    (first,) = book.sets("north", ["waiting"])
    approve(store, people, "alice", "bob")
    anet.run(store, now=T0 + 3 * hour)
    assert key(store, "p3") in anet.target()
    old = book.statements(first.id)
    anet.put("p3", granted=False)
    anet.run(store, now=T0 + 4 * hour)
    assert key(store, "p3") not in anet.target()
    anet.put("p3")
    anet.run(store, now=T0 + 5 * hour)
    (again,) = book.sets("north", ["waiting"])
    assert again.id != first.id
    for statement in old:
        book.add_statement(dataclasses.replace(statement, set_id=again.id))
    anet.run(store, now=T0 + 6 * hour)
    assert key(store, "p3") not in anet.target()
