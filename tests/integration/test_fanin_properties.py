"""Fan-in's promise, with hypothesis: after any edits of the partners' sources and of the
national suppression list, and any runs, the national target holds one record per person
who may go up, and nothing else:

- no field value a partner's policy does not allow (Leeds's last names, York's cities…);
- no value from a record without the national purpose's consent;
- nobody who said no at any partner, nobody on the suppression list, nobody without a
  contribution; and no email, phone number or other value in the state store or a log.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector_core.fanin import normal_email, normal_phone
from connector_core.testing.checks import log_text
from tests.fanin import ALLOWED, COLUMNS, FanInNetwork
from tests.leaks import database_text, values_in

PARTNERS = ("hull", "leeds", "york")
EMAILS = ("ann@example.org", "ANN@example.org ", "bob@example.org", "cy@example.org", "")
PHONES = ("07700 900001", "+44 7700 900001", "07700 900002", "+44 7700 900003", "")
MARKED = ("first_name", "last_name", "city", "postal_code")
RECORD = st.fixed_dictionaries(
    {
        "email": st.sampled_from(EMAILS),
        "phone": st.sampled_from(PHONES),
        "national": st.sampled_from(["yes", "no", ""]),
    }
)
EDIT = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(PARTNERS), st.sampled_from("123"), RECORD),
    st.tuples(st.just("remove"), st.sampled_from(PARTNERS), st.sampled_from("123"), st.just({})),
    st.tuples(
        st.just("suppress"),
        st.just(""),
        st.just(""),
        st.fixed_dictionaries(
            {"keys": st.lists(st.sampled_from(EMAILS[:4] + PHONES[:4]), max_size=2)}
        ),
    ),
    st.tuples(st.just("run"), st.just(""), st.just(""), st.just({})),
    # the partner's source is missing at the next run only (a failed export, a lost share)
    st.tuples(st.just("fail"), st.sampled_from(PARTNERS), st.just(""), st.just({})),
)
EXAMPLES = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_serial = itertools.count()


def _keys(record: dict[str, str]) -> set[str]:
    found = set()
    if email := normal_email(record.get("email")):
        found.add(f"e:{email}")
    if phone := normal_phone(record.get("phone"), "44"):
        found.add(f"p:{phone}")
    return found


def people(sources: dict[str, dict[str, dict[str, str]]]) -> list[list[tuple[str, dict[str, str]]]]:
    """The records grouped into people by shared normalised email or phone (a model written
    apart from the engine's: merge groups until no two share a key)."""
    groups = [[(p, r)] for p, records in sources.items() for r in records.values() if _keys(r)]
    merged = True
    while merged:
        merged = False
        for a, b in itertools.combinations(range(len(groups)), 2):
            keys_a = set().union(*(_keys(r) for _, r in groups[a]))
            keys_b = set().union(*(_keys(r) for _, r in groups[b]))
            if keys_a & keys_b:
                groups[a] += groups.pop(b)
                merged = True
                break
    return groups


def expected(
    sources: dict[str, dict[str, dict[str, str]]], suppressed: list[str]
) -> tuple[int, set[tuple[str, str]]]:
    """How many people the target must hold, and every (field, value) it may hold."""
    said_no = set().union(*(_keys({"email": k, "phone": k}) for k in suppressed))
    count, allowed = 0, set()
    for person in people(sources):
        keys = set().union(*(_keys(r) for _, r in person))
        refused = any(r["national"] == "no" for _, r in person)
        givers = [(p, r) for p, r in person if r["national"] == "yes"]
        if refused or keys & said_no or not givers:
            continue
        count += 1
        for partner, record in givers:
            allowed.update((f, record[f]) for f in ALLOWED[partner] if record.get(f))
    return count, allowed


def offered(sources: dict[str, dict[str, dict[str, str]]]) -> set[tuple[str, str]]:
    """Every (field, value) a consenting record offers under its partner's policy."""
    return {
        (f, r[f])
        for p, records in sources.items()
        for r in records.values()
        if r["national"] == "yes"
        for f in ALLOWED[p]
        if r.get(f)
    }


def refusing(sources: dict[str, dict[str, dict[str, str]]], suppressed: list[str]) -> set[str]:
    """The keys of every record that says no, and of the suppression list."""
    said_no = set().union(*(_keys({"email": k, "phone": k}) for k in suppressed))
    return said_no.union(
        *(
            _keys(r)
            for records in sources.values()
            for r in records.values()
            if r["national"] == "no"
        )
    )


def record(partner: str, data: dict[str, Any]) -> dict[str, str]:
    """A partner's record: every marked field holds a value unique to partner and field."""
    n = next(_serial)
    marks = {f: f"Zq{partner[0].upper()}{f[:2].upper()}{n}x" for f in MARKED}
    return {**marks, **data}


FILLER = {"phone": "", "national": "yes", "first_name": "Always"}


@EXAMPLES
@given(edits=st.lists(EDIT, min_size=1, max_size=12))
@example(
    edits=[
        ("put", "leeds", "1", {"email": "ann@example.org", "phone": "", "national": "yes"}),
        ("put", "york", "1", {"email": "", "phone": "07700 900001", "national": "yes"}),
        ("put", "hull", "1", {"email": "ANN@example.org ", "phone": "+44 7700 900001",
                              "national": "yes"}),
        ("run", "", "", {}),
        ("suppress", "", "", {"keys": ["+44 7700 900001"]}),
    ]
)  # fmt: skip
@example(
    edits=[
        ("put", "leeds", "1", {"email": "cy@example.org", "phone": "", "national": "yes"}),
        ("put", "york", "1", {"email": "cy@example.org", "phone": "", "national": "no"}),
        ("run", "", "", {}),
        ("fail", "york", "", {}),
    ]
)  # fmt: skip
def test_the_national_target_holds_only_allowed_fields_of_people_who_may_go_up(
    edits: list[tuple[str, str, str, dict[str, Any]]],
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    root: Path = tmp_path_factory.mktemp("fanin")
    net = FanInNetwork(root)
    # Someone always at each partner keeps every read non-empty (an empty read of a partner
    # that gave before keeps its people: not what this test is about).
    sources = {p: {"0": {"id": f"{p}0", "email": f"{p}@example.net", **FILLER}} for p in PARTNERS}
    suppressed: list[str] = []
    everything: set[str] = set()
    failing: set[str] = set()  # partners whose source is missing at the next run
    last_read = {p: dict(records) for p, records in sources.items()}  # at its last read
    for kind, partner, number, data in [*edits, ("run", "", "", {})]:
        if kind == "fail":
            failing.add(partner)
        elif kind == "put":
            sources[partner][number] = {"id": f"{partner}{number}", **record(partner, data)}
            everything.update(v for f, v in sources[partner][number].items() if f in MARKED)
        elif kind == "remove":
            sources[partner].pop(number, None)
        elif kind == "suppress":
            suppressed = list(data["keys"])
            net.suppress([{"email": k} if "@" in k else {"phone": k} for k in suppressed])
        else:
            for name, rows in sources.items():
                net.partner(name, [{c: r.get(c, "") for c in COLUMNS} for r in rows.values()])
                if name in failing:
                    (root / "data" / f"{name}.csv").unlink()
                else:
                    last_read[name] = dict(rows)
            result = net.run()
            rows = net.national()
            if failing:  # what its last read said still holds: its no above all
                assert result.exit_code == 1, result
                seen = {p: last_read[p] if p in failing else sources[p] for p in PARTNERS}
                allowed, refused = offered(seen), refusing(seen, suppressed)
                for row in rows:
                    assert not _keys(row) & refused, row
            else:
                assert result.exit_code == 0, result
                count, allowed = expected(sources, suppressed)
                assert len(rows) == count
            failing.clear()
            for row in rows:
                for field, value in row.items():
                    if field != "id" and value:
                        assert (field, value.lstrip("'")) in allowed, field
    stored = "\n".join(database_text(net.state_url))
    assert values_in(stored, [*everything, "example.", "7700"]) == []
    assert values_in(log_text(caplog.records), [*everything, "example.", "7700"]) == []
