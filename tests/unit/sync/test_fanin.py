"""Fan-in: many partners' sources into one target, one record per person (both state stores)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.fanin import normal_email, normal_phone
from connector_core.sync.fanin import Contribution, strictest
from connector_core.sync.tables import metadata
from tests.fanin import FanInNetwork, write_csv

ANN_L = {"id": "l1", "email": " Ann@Example.org ", "first_name": "Ann", "city": "Leeds"}
ANN_Y = {"id": "y1", "email": "ann@example.org", "phone": "07700 900123", "last_name": "Smith"}
ANN_H = {"id": "h1", "phone": "+44 7700 900123", "first_name": "A.", "postal_code": "HU1 1AA"}
BOB_L = {"id": "l2", "email": "bob@example.org", "first_name": "Bob", "city": "Leeds"}
YES = {"national": "yes"}


@pytest.fixture
def net(tmp_path: Path, state_url: str) -> FanInNetwork:
    return FanInNetwork(tmp_path, state_url)


def agreed(*rows: dict[str, str]) -> list[dict[str, str]]:
    return [{**row, **YES} for row in rows]


def test_people_are_matched_across_partners_into_one_record_of_allowed_fields(
    net: FanInNetwork,
) -> None:
    net.partner("leeds", agreed(ANN_L | {"last_name": "NotAllowed"}, BOB_L))
    net.partner("york", agreed(ANN_Y | {"city": "NotAllowedEither"}))
    net.partner("hull", agreed(ANN_H))
    result = net.run()
    assert result.exit_code == 0, result.problems
    assert result.counts.created == 2
    rows = net.national()
    assert len(rows) == 2
    ann = next(r for r in rows if r["last_name"] == "Smith")
    # each field from the first partner by name whose policy allows it: hull, leeds, york
    assert ann["first_name"] == "A."  # hull's, before leeds's
    assert ann["city"] == "Leeds"  # only leeds gives city (york's is not allowed)
    assert ann["postal_code"] == "HU1 1AA"
    assert ann["email"].strip().lower() == "ann@example.org"
    assert "NotAllowed" not in str(rows)


def test_the_ledger_says_which_partner_gave_which_field(net: FanInNetwork) -> None:
    net.partner("leeds", agreed(ANN_L))
    net.partner("york", agreed(ANN_Y))
    net.run()
    with net.store() as store:
        (entry,) = list(store.ledger_entries(job="national"))
    assert entry.action == "create"
    assert entry.reason.endswith("(fan-in: leeds=first_name,email,city; york=last_name,phone)")


def test_the_state_store_holds_no_email_or_phone(net: FanInNetwork, state_url: str) -> None:
    net.partner("leeds", agreed(ANN_L, BOB_L))
    net.partner("york", agreed(ANN_Y))
    net.suppress([{"email": "carol@example.org"}])
    net.run()
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    text = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            text += [str(tuple(row)) for row in conn.execute(sa.select(table))]
    engine.dispose()
    dump = "\n".join(text).lower()
    assert "fan-in" in dump  # the contributions and the ledger are there
    # the phone as given and as normalised ("447700900123"); a shorter probe such as "7700"
    # also matches the random hex of person ids and digests now and then
    phone = ("07700 900123", "7700900123")
    for value in ("ann@example.org", "bob@example.org", "carol@example.org", *phone, "smith"):
        assert value not in dump


def test_one_partners_withdrawal_removes_only_its_fields(net: FanInNetwork) -> None:
    net.partner("leeds", agreed(ANN_L))
    net.partner("york", agreed(ANN_Y))
    net.run()
    (ann,) = net.national()
    assert ann["city"] == "Leeds"
    net.partner("leeds", agreed(BOB_L))  # a complete read without Ann: leeds's part goes
    result = net.run()
    assert result.counts.updated == 1, result
    ann = net.by_email()["ann@example.org"]
    assert ann["city"] == ""
    assert ann["first_name"] == ""
    assert ann["last_name"] == "Smith"
    assert ann["email"] == "ann@example.org"
    net.partner("york", [ANN_Y | {"national": ""}])  # no evidence at york any more
    result = net.run()
    assert result.counts.deleted == 1
    assert [r["first_name"] for r in net.national()] == ["Bob"]


def test_a_no_from_any_partner_takes_the_person_back_at_once(net: FanInNetwork) -> None:
    many = [{**BOB_L, "id": f"b{i}", "email": f"b{i}@example.org"} for i in range(30)]
    net.partner("leeds", agreed(ANN_L, *many))
    net.partner("york", agreed(ANN_Y))
    net.run()
    net.partner("york", [ANN_Y | {"national": "no"}])
    result = net.run()
    assert result.counts.deleted == 1
    assert result.counts.held == 0
    assert "ann@example.org" not in str(net.national()).lower()
    with net.store() as store:
        last = list(store.ledger_entries(job="national"))[-1]
    assert last.action == "delete"
    assert last.reason == "withdrawn:national"
    assert last.consent_basis["national"]["source"] == "fan-in:partner:york"


def test_the_suppression_list_keeps_people_out_and_takes_them_back(net: FanInNetwork) -> None:
    net.partner("leeds", agreed(ANN_L, BOB_L))
    net.partner("york", agreed(ANN_Y))  # York's record links Ann's email and phone
    net.suppress([{"phone": "+447700900123"}])  # so the list's phone finds Ann at leeds too
    net.run()
    assert [r["first_name"] for r in net.national()] == ["Bob"]
    net.suppress([])
    net.run()
    assert len(net.national()) == 2
    net.suppress([{"email": "BOB@example.org "}])
    result = net.run()
    assert result.counts.deleted == 1
    assert result.counts.held == 0
    assert "bob" not in str(net.national()).lower()


def test_a_failing_partner_keeps_its_contributions_and_the_others_go_on(
    net: FanInNetwork,
) -> None:
    net.partner("leeds", agreed(ANN_L, BOB_L))
    net.partner("york", agreed(ANN_Y))
    net.run()
    (net.root / "data" / "leeds.csv").unlink()  # leeds's source fails
    carol = {"id": "y2", "email": "carol@example.org", "last_name": "Jones"}
    net.partner("york", agreed(ANN_Y, carol))
    result = net.run()
    assert result.exit_code == 1
    assert any("partner 'leeds'" in p for p in result.problems)
    rows = net.by_email()
    assert rows["bob@example.org"]["first_name"] == "Bob"  # kept as it was
    assert rows["carol@example.org"]["last_name"] == "Jones"  # york went on
    net.partner("leeds", agreed(ANN_L, BOB_L))
    assert net.run().exit_code == 0
    assert len(net.national()) == 3


def test_a_partner_record_whose_id_no_store_can_hold_keeps_that_partners_people(
    net: FanInNetwork,
) -> None:
    """An id with a NUL (which PostgreSQL cannot hold) makes the partner's read unreadable:
    reported without the id, its people kept as they were, the other partners go on."""
    net.partner("leeds", agreed(ANN_L, BOB_L))
    net.partner("york", agreed(ANN_Y))
    net.run()
    carol = {"id": "y2", "email": "carol@example.org", "last_name": "Jones"}
    net.partner("leeds", agreed(ANN_L, {**BOB_L, "id": "l\x002"}))
    net.partner("york", agreed(ANN_Y, carol))
    result = net.run()
    assert result.exit_code == 1
    assert [p for p in result.problems if "partner 'leeds'" in p] == [
        "partner 'leeds' (leeds) not read: a record without a usable id"
    ]
    rows = net.by_email()
    assert rows["bob@example.org"]["first_name"] == "Bob"  # kept as it was
    assert rows["carol@example.org"]["last_name"] == "Jones"  # york went on


def test_an_empty_read_of_a_partner_that_gave_before_keeps_its_people(net: FanInNetwork) -> None:
    net.partner("leeds", agreed(BOB_L))
    net.run()
    net.partner("leeds", [])  # a truncated export looks just like that
    result = net.run()
    assert result.exit_code == 1
    assert "read empty" in " ".join(result.problems)
    assert [r["first_name"] for r in net.national()] == ["Bob"]


def test_a_retired_partner_takes_only_its_part_back(net: FanInNetwork) -> None:
    net.partner("leeds", agreed(ANN_L, BOB_L))
    net.partner("york", agreed(ANN_Y))
    net.run()
    net.configure(["york", "hull"])  # leeds leaves the fan-in
    result = net.run()
    assert result.exit_code == 0, result
    (ann,) = net.national()
    assert ann["city"] == ""
    assert ann["last_name"] == "Smith"
    with net.store() as store, store._transaction() as conn:
        partners = {r[0] for r in conn.execute(sa.text("SELECT partner FROM fan_in_contributions"))}
    assert partners == {"york"}


def test_a_dry_run_writes_nothing(net: FanInNetwork) -> None:
    net.partner("leeds", agreed(ANN_L))
    result = net.run(dry_run=True)
    assert [c.action for c in result.planned] == ["create"]
    assert net.national() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" Ann@Example.ORG ", "ann@example.org"),
        ("jose\u0301@example.org", "jos\u00e9@example.org"),  # decomposed (macOS): composed
        ("JOS\u00c9@EXAMPLE.ORG", "jos\u00e9@example.org"),
        ("\ufeffann@example.org", "ann@example.org"),  # a BOM a spreadsheet left
        ("ann\u200b@example.org\u200e", "ann@example.org"),  # zero-width, direction marks
        ("no-at-sign", None),
        ("a b@example.org", None),
        ("@example.org", None),
        (None, None),
    ],
)
def test_emails_are_trimmed_and_lower_cased(value: object, expected: str | None) -> None:
    assert normal_email(value) == expected


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        ("+44 7700 900123", None, "447700900123"),
        ("0044 (7700) 900-123", None, "447700900123"),
        ("07700 900123", "44", "447700900123"),
        ("07700 900123", None, "07700900123"),
        ("12345", None, None),
        ("call me", None, None),
        ("+44 7700 9OO123", None, None),
        ("+44 (0)7700 900456", None, "447700900456"),  # the trunk 0 written in brackets
        ("0044 (0) 7700 900456", "44", "447700900456"),
        ("07700\u2013900123", "44", "447700900123"),  # an en dash
        ("07700\u2011900123", "44", "447700900123"),  # a non-breaking hyphen
        ("\u202a+44 7700 900123\u202c", None, "447700900123"),  # direction marks
        ("\uff10\uff17\uff17\uff10\uff10 900123", "44", "447700900123"),  # full-width
    ],
)
def test_phones_become_their_international_digits(
    value: str, country: str | None, expected: str | None
) -> None:
    assert normal_phone(value, country) == expected


INVISIBLE = st.sampled_from(["\u200b", "\u200e", "\ufeff", "\u00ad", "\u2060", "\u202a"])


@settings(max_examples=200, deadline=None)
@given(
    local=st.text(st.characters(categories=["Ll", "Lu", "Nd", "Mn"]), min_size=1, max_size=8),
    noise=st.lists(st.tuples(st.integers(0, 30), INVISIBLE), max_size=4),
)
def test_an_email_matches_however_it_was_typed(local: str, noise: list[tuple[int, str]]) -> None:
    """Composed or decomposed, with invisible characters anywhere: one email, one key."""
    email = f"{local}@example.org"
    typed = unicodedata.normalize("NFD", email)
    for at, mark in noise:
        typed = typed[:at] + mark + typed[at:]
    assert normal_email(typed) == normal_email(email)


@settings(max_examples=200, deadline=None)
@given(
    digits=st.text("0123456789", min_size=9, max_size=10),
    noise=st.lists(INVISIBLE | st.sampled_from([" ", "-", "\u2013", "."]), max_size=4),
)
def test_a_phone_matches_however_it_was_typed(digits: str, noise: list[str]) -> None:
    """+44 (0)7…, 0044 7…, 07… with `country` 44, with separators and invisible characters
    within the number: one number."""
    number = "7" + digits
    expected = normal_phone(f"+44{number}")
    for prefix in ("+44 (0)", "0044 ", "0"):
        typed = prefix + number[:3] + "".join(noise) + number[3:]
        assert normal_phone(typed, "44") == expected, typed


def test_while_a_partner_fails_a_change_elsewhere_rewrites_narrower_and_a_no_goes_through(
    net: FanInNetwork,
) -> None:
    dan = {"id": "y3", "email": "dan@example.org", "last_name": "Brown"}
    net.partner("leeds", agreed(ANN_L, BOB_L, {"id": "l3", "email": "dan@example.org"}))
    net.partner("york", agreed(ANN_Y, dan))
    net.run()
    (net.root / "data" / "leeds.csv").write_text("garbage\n", encoding="utf-8")  # drifted
    net.partner("york", [*agreed(ANN_Y | {"last_name": "Smyth"}), dan | {"national": "no"}])
    result = net.run()
    assert result.exit_code == 1
    rows = net.by_email()
    assert "dan@example.org" not in rows  # a no goes through while leeds fails
    assert rows["ann@example.org"]["last_name"] == "Smyth"  # york changed: rewritten...
    assert rows["ann@example.org"]["city"] == ""  # ...from york alone until leeds is back
    assert rows["bob@example.org"]["first_name"] == "Bob"  # only leeds's: kept as it was
    net.partner("leeds", agreed(ANN_L, BOB_L))
    assert net.run().exit_code == 0
    assert net.by_email()["ann@example.org"]["city"] == "Leeds"


DAN_L = {"id": "l3", "email": "dan@example.org", "first_name": "Dan"}
DAN_Y = {"id": "y3", "email": "dan@example.org", "national": "no"}


def _york_fails(net: FanInNetwork, how: str) -> None:
    york = net.root / "data" / "york.csv"
    if how == "reads-empty":
        net.partner("york", [])  # a truncated export
    elif how == "missing":
        york.unlink()
    else:  # the consent column is gone: the policy's needs are not met
        york.write_text("id,email\ny3,dan@example.org\n", encoding="utf-8")


@pytest.mark.parametrize("how", ["reads-empty", "missing", "no-consent-column"])
def test_a_partners_no_holds_while_that_partner_cannot_be_read(net: FanInNetwork, how: str) -> None:
    """Dan said no at York: while York cannot be read, its no is still evidence (kept as
    keys), so Leeds's yes never sends him up; once York is read again it counts afresh."""
    net.partner("leeds", agreed(DAN_L, BOB_L))
    net.partner("york", [DAN_Y])
    assert net.run().exit_code == 0
    assert [r["first_name"] for r in net.national()] == ["Bob"]
    _york_fails(net, how)
    result = net.run()
    assert result.exit_code == 1
    assert any("partner 'york'" in p for p in result.problems)
    assert [r["first_name"] for r in net.national()] == ["Bob"]
    net.partner("york", [DAN_Y | {"national": "yes"}])  # Dan changed his mind at York
    assert net.run().exit_code == 0
    assert sorted(r["first_name"] for r in net.national()) == ["Bob", "Dan"]


def test_a_no_reaches_a_person_of_a_failing_partner_through_any_of_their_keys(
    net: FanInNetwork,
) -> None:
    """Ann went up from Leeds (email and phone); Leeds fails; York knows her by phone only
    and says no: she is taken back (her stored keys join York's record to her)."""
    net.partner("leeds", agreed(ANN_L | {"phone": "07700 900123"}, BOB_L))
    assert net.run().exit_code == 0
    (net.root / "data" / "leeds.csv").unlink()
    net.partner("york", [{"id": "y1", "phone": "+44 7700 900123", "national": "no"}])
    result = net.run()
    assert result.exit_code == 1
    assert [r["first_name"] for r in net.national()] == ["Bob"]


def test_a_failing_partners_person_keeps_its_id_and_row(net: FanInNetwork) -> None:
    """Ann's id is her email key, which only Leeds gives; York matches her by phone. While
    Leeds fails and York is unchanged, her row stays exactly as it was (no take-back and
    re-creation under York's key), and when Leeds is back nothing changes."""
    ann_l = agreed(ANN_L | {"phone": "07700 900123"})
    net.partner("leeds", ann_l)
    net.partner("york", agreed({"id": "y1", "phone": "07700 900123", "last_name": "Smith"}))
    assert net.run().exit_code == 0
    before = net.national()
    (net.root / "data" / "leeds.csv").unlink()
    assert net.run().exit_code == 1
    assert net.national() == before
    net.partner("leeds", ann_l)
    assert net.run().exit_code == 0
    assert net.national() == before
    with net.store() as store:
        assert [e.action for e in store.ledger_entries(job="national")] == ["create"]


@pytest.mark.parametrize(
    "entry",
    [
        {"mail": "carol@example.org"},  # the list's email column renamed by a new export
        {"email": "Carol <carol@example.org>"},  # not an address as it stands
        {"email": "", "phone": ""},
    ],
    ids=["column-renamed", "not-an-address", "blank"],
)
def test_a_suppression_list_row_that_matches_nobody_writes_nothing(
    net: FanInNetwork, entry: dict[str, str]
) -> None:
    """A row of the list that gives no email or phone to match by could be anybody's no:
    the run writes nothing (exit 3) and names neither the row's id nor its value."""
    carol = {"id": "l5", "email": "carol@example.org", "first_name": "Carol"}
    net.partner("leeds", agreed(carol, BOB_L))
    net.suppress([{"email": "carol@example.org"}])
    assert net.run().exit_code == 0
    assert [r["first_name"] for r in net.national()] == ["Bob"]
    path = net.root / "data" / "nono.csv"
    columns = ["id", *entry]
    lines = [",".join(columns), ",".join(["n0", *(f'"{v}"' for v in entry.values())])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = net.run()
    assert result.exit_code == 3, result
    assert "give no email or phone to match by" in str(result.error)
    assert "carol" not in str(result.error).lower()
    assert "n0" not in str(result.error)
    assert [r["first_name"] for r in net.national()] == ["Bob"]


def test_a_partner_whose_source_lost_a_column_people_were_matched_by_keeps_them(
    net: FanInNetwork,
) -> None:
    """Leeds's phone column serves matching only (its policy does not send it up): an export
    without it is a failing partner, never a reason to take its phone-only people back."""
    phil = {"id": "l2", "phone": "07700 900001", "first_name": "Phil"}
    net.partner("leeds", agreed(ANN_L, phil))
    assert net.run().exit_code == 0
    assert sorted(r["first_name"] for r in net.national()) == ["Ann", "Phil"]
    columns = ["id", "email", "first_name", "city", "national"]  # no phone column
    write_csv(net.root / "data" / "leeds.csv", agreed(ANN_L, phil), columns)
    result = net.run()
    assert result.exit_code == 1
    assert any("no longer provides phone" in p for p in result.problems), result.problems
    assert sorted(r["first_name"] for r in net.national()) == ["Ann", "Phil"]


def test_more_partners_leaving_at_once_than_the_limit_keep_their_part_until_accepted(
    tmp_path: Path, state_url: str
) -> None:
    """A truncated export of the fan-in's registry looks like 9 of 10 partners leaving: held
    (their contributions kept, exit 5) as a job template's retirements are, until accepted."""
    net = FanInNetwork(tmp_path, state_url, partners=())
    names = [f"p{i}" for i in range(10)]
    write_csv(net.root / "data" / "partners.csv", [{"name": n} for n in names], ["name"])
    (net.root / "policies" / "partner-up.yaml").write_text(
        "policy: partner-up\nrequire_consent: [national]\nrules:\n  - allow: everyone\n"
        "fields:\n  email: show\n  city: show\n",
        encoding="utf-8",
    )
    for i, name in enumerate(names):
        people = [
            {"id": f"{name}-{j}", "email": f"person{j}@example.org", "national": "yes"}
            | ({"city": f"City{j}"} if i == 0 else {})
            for j in range(3)
        ]
        columns = ["id", "email", "city", "national"]
        write_csv(net.root / "data" / "up" / f"{name}.csv", people, columns)
    text = net.config_path.read_text(encoding="utf-8").replace(
        "    sources:\n",
        "    partners:\n      registry: data/partners.csv\n      policy: policies/partner-up.yaml\n"
        "      source:\n        adapter: csv\n"
        '        settings: {path: "data/up/{partner.name}.csv"}\n'
        "        mapping: {consent.national: national}\n",
    )
    net.config_path.write_text(text, encoding="utf-8")
    assert net.run().exit_code == 0
    before = net.national()
    assert all(row["city"] for row in before)
    write_csv(net.root / "data" / "partners.csv", [{"name": "p9"}], ["name"])  # truncated
    held = net.run()
    assert held.exit_code == 5, held
    assert any("9 of its 10 partners left at once" in p for p in held.problems), held.problems
    assert net.national() == before
    accepted = net.run(accept_deletes=9)
    assert accepted.exit_code == 0, accepted
    assert not any(row["city"] for row in net.national())  # p0's part went


def test_without_the_suppression_list_nothing_is_written(net: FanInNetwork) -> None:
    net.partner("leeds", agreed(ANN_L))
    (net.root / "data" / "nono.csv").unlink()
    result = net.run()
    assert result.exit_code == 4
    assert net.national() == []


def test_a_partner_without_emails_or_phones_is_reported(net: FanInNetwork) -> None:
    net.partner("leeds", agreed({"id": "l1", "first_name": "Ann"}))
    result = net.run()
    assert result.exit_code == 1
    assert "has an email or phone" in " ".join(result.problems)


def test_the_suppression_list_finds_people_of_a_partner_that_cannot_be_read(
    net: FanInNetwork,
) -> None:
    net.partner("leeds", agreed(ANN_L | {"phone": "07700 900123"}, BOB_L))
    net.run()
    (net.root / "data" / "leeds.csv").unlink()
    net.suppress([{"phone": "+44 7700 900123"}])  # Ann's phone: kept only as a keyed hash
    result = net.run()
    assert result.exit_code == 1
    assert [r["first_name"] for r in net.national()] == ["Bob"]


def _given(partner: str, **consent: bool | None) -> Contribution:
    states = {p: {"granted": g, "source": partner, "at": f"2026-0{len(partner) % 9}-01"}
              for p, g in consent.items() if g is not None}  # fmt: skip
    return Contribution(partner, "1", "person", {}, {}, states, "digest")


@pytest.mark.parametrize(
    ("used", "said_no", "expected"),
    [
        ([_given("a", contact=True), _given("b", contact=True)], (), True),
        ([_given("a", contact=True), _given("b", contact=None)], (), None),  # no evidence at b
        ([_given("a", contact=True), _given("b", contact=False)], (), False),
        ([_given("a", contact=True)], ("contact",), False),  # a record not used says no
    ],
    ids=["all-yes", "one-silent", "one-no", "no-elsewhere"],
)
def test_the_merged_consent_is_the_strictest(
    used: list[Contribution], said_no: tuple[str, ...], expected: bool | None
) -> None:
    merged = strictest(used, said_no).get("contact")
    assert (None if merged is None else merged["granted"]) is expected


def test_a_merged_yes_carries_the_oldest_time() -> None:
    merged = strictest([_given("abc", contact=True), _given("a", contact=True)])
    assert merged["contact"]["at"] == "2026-01-01"
    assert merged["contact"]["source"] == "fan-in:abc,a"


def test_a_store_at_0016_gains_the_contributions_table_and_loses_it_on_downgrade(
    state_url: str,
) -> None:
    import alembic.command

    from connector_core.sync.migrations import alembic_config
    from connector_core.sync.state import StateStore

    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0016_fingerprint_blocks")
        assert not sa.inspect(conn).has_table("fan_in_contributions")
    StateStore.open(state_url).close()  # migrates to the head
    with engine.begin() as conn:
        assert sa.inspect(conn).has_table("fan_in_contributions")
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.downgrade(cfg, "0016_fingerprint_blocks")
        assert not sa.inspect(conn).has_table("fan_in_contributions")
    engine.dispose()
