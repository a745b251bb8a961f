"""CiviCRM benchmark: request budgets and where the time goes, against the fake CiviCRM.

Against a :class:`~connector_civicrm.testing.FakeCiviCRM` seeded with N contacts (emails,
phones, addresses, groups, tags) it measures, in one run (issue 5, "Efficiency"):

1. the adapter's initial full read: requests (budget ceil(N / page size) + 5), records,
   wall time;
2. after ``--changed`` contacts change (the fake's clock advanced, then updated), an
   incremental read: requests (budget 5), records (budget 2 x changed), wall time;
3. writing ``--write`` contacts into an empty fake: requests (budget ceil(W / batch) + 5).

For each, the adapter's requests ``Session.send`` is wrapped with a timing hook (on the
client, not a mock: the real send runs inside it), which also keeps every request sent.
Wall time splits into *waiting on the server* (the time inside ``send``) and *our code* (the
rest); the fake's own handling time (its per-request ``duration``) is shown beside it. The
*raw floor* replays the very same requests (URL, headers, form fields) with a plain
``requests`` loop in the same run, decoding each answer's JSON, so our overhead is a ratio.

    uv run python -m bench.civicrm_bench [--contacts 10000] [--changed 100] [--write 1000]
                                          [--page-size 500] [--write-results]

``--write-results`` writes bench/RESULTS-civicrm.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import requests
from connector_civicrm import CivicrmAdapter, CivicrmSettings
from connector_civicrm.testing import FakeCiviCRM

from bench.results import cpu_model
from connector_core.adapters import Change
from connector_core.credentials import StaticSecrets

RESULTS = Path(__file__).with_name("RESULTS-civicrm.md")
CONSENT = {"contact_me": {"field": "is_opt_out"}, "news": {"group": "Newsletter"}}


@dataclass
class Sent:
    """One request as the adapter sent it, and the seconds spent inside ``send``."""

    url: str
    headers: dict[str, str]
    form: list[tuple[str, str]]
    seconds: float


@dataclass
class SendTimer:
    """Wraps a session's ``send``: times each call and keeps what was sent."""

    send: Callable[..., requests.Response]
    sent: list[Sent] = field(default_factory=list)

    def __call__(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        start = time.perf_counter()
        try:
            return self.send(request, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            body = request.body or ""
            text = body.decode() if isinstance(body, bytes) else str(body)
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            self.sent.append(Sent(str(request.url), headers, parse_qsl(text), seconds))

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.sent)


def make_adapter(fake: FakeCiviCRM, page_size: int) -> tuple[CivicrmAdapter, SendTimer]:
    """An adapter on `fake` whose session's ``send`` is timed."""
    settings = CivicrmSettings.model_validate(
        {
            "url": fake.base_url,
            "api_key": {"secret": "api_key"},
            "page_size": page_size,
            "contact_type": None,
            "consent": CONSENT,
        }
    )
    adapter = CivicrmAdapter(settings, StaticSecrets({"api_key": fake.api_key}), connection="bench")
    session = adapter.client._session
    timer = SendTimer(session.send)
    session.send = timer  # type: ignore[method-assign]
    writes = adapter.client._writes  # writes have a session of their own (no blind retries)
    writes.send = SendTimer(writes.send, timer.sent)  # type: ignore[method-assign]
    return adapter, timer


def replay(sent: list[Sent]) -> float:
    """Seconds for a plain ``requests`` loop posting the same requests (JSON decoded)."""
    session = requests.Session()
    start = time.perf_counter()
    for s in sent:
        response = session.post(s.url, data=s.form, headers=s.headers, timeout=600)
        response.raise_for_status()
        response.json()
    elapsed = time.perf_counter() - start
    session.close()
    return elapsed


@dataclass
class Phase:
    """One measured phase: counts, the time split, and the raw floor."""

    name: str
    requests: int
    budget: int
    records: int
    record_budget: int | None
    wall: float
    in_send: float
    server: float
    raw: float
    raw_server: float

    def as_dict(self) -> dict[str, Any]:
        ours = self.wall - self.in_send
        return {
            "name": self.name,
            "requests": self.requests,
            "budget": self.budget,
            "records": self.records,
            "record_budget": self.record_budget,
            "wall_s": self.wall,
            "waiting_s": self.in_send,
            "server_s": self.server,
            "ours_s": ours,
            "waiting_share": self.in_send / self.wall if self.wall else 0.0,
            "ours_share": ours / self.wall if self.wall else 0.0,
            "raw_s": self.raw,
            "raw_server_s": self.raw_server,
            "ratio_to_raw": self.wall / self.raw if self.raw else 0.0,
            "within_budget": self.requests <= self.budget
            and (self.record_budget is None or self.records <= self.record_budget),
        }


def _measure(
    name: str,
    fake: FakeCiviCRM,
    timer: SendTimer,
    run: Callable[[], int],
    budget: int,
    record_budget: int | None,
    replay_on: FakeCiviCRM | None = None,
) -> Phase:
    """Run `run` (returning records handled), then replay its requests with plain requests.

    `replay_on` is a fake in the same state the run started from (writes); reads replay
    on `fake` itself.
    """
    fake.clear_requests()
    timer.sent.clear()
    start = time.perf_counter()
    records = run()
    wall = time.perf_counter() - start
    count = fake.count_requests()
    server = sum(r["duration"] or 0.0 for r in list(fake.requests))
    sent = list(timer.sent)
    target = replay_on or fake
    if replay_on is not None:
        base = fake.base_url
        sent = [
            Sent(s.url.replace(base, replay_on.base_url, 1), s.headers, s.form, s.seconds)
            for s in sent
        ]
    target.clear_requests()
    raw = replay(sent)
    raw_server = sum(r["duration"] or 0.0 for r in list(target.requests))
    return Phase(
        name, count, budget, records, record_budget, wall, timer.seconds, server, raw, raw_server
    )


def write_records(n: int) -> list[dict[str, Any]]:
    """Contacts to write: email, phone, address, groups, tags and consent."""
    return [
        {"id": f"k{i}", "first_name": f"F{i}", "last_name": "L", "email": f"p{i}@example.org",
         "phone": f"+1 555 {i:04d}", "city": "Berlin", "postal_code": "10115",
         "groups": ["Volunteers", "Members"][: i % 3], "tags": ["donor"] if i % 2 else [],
         "consent": {"contact_me": {"granted": True}, "news": {"granted": i % 2 == 0}}}
        for i in range(n)
    ]  # fmt: skip


def run_bench(
    contacts: int, changed: int, write: int, page_size: int, seed: int = 0
) -> dict[str, Any]:
    """Every phase, each against its own fake; returns JSON-ready results."""
    phases: list[Phase] = []
    with FakeCiviCRM() as fake:
        started = time.perf_counter()
        ids = fake.seed_contacts(contacts, random.Random(seed))
        seed_s = time.perf_counter() - started
        fake.freeze_time("2026-06-01 09:00:00")
        adapter, timer = make_adapter(fake, page_size)
        cursor: list[str] = []

        def full() -> int:
            pages = list(adapter.read())
            last = pages[-1].cursor
            assert last is not None, "a full read ends with a cursor"
            cursor.append(last)
            return sum(len(p.records) for p in pages)

        budget = math.ceil(contacts / page_size) + 5
        phases.append(_measure("initial full read", fake, timer, full, budget, None))
        fake.advance(60)
        step = max(1, len(ids) // changed) if changed else 1
        for cid in ids[::step][:changed]:
            fake.update_contact(cid, source=f"changed {cid}")

        def incremental() -> int:
            return sum(len(p.records) for p in adapter.read(cursor=cursor[-1]))

        phases.append(_measure("incremental read", fake, timer, incremental, 5, 2 * changed))
        adapter.close()
    with FakeCiviCRM() as fake, FakeCiviCRM() as again:
        adapter, timer = make_adapter(fake, page_size)
        changes = [Change.upsert(str(r["id"]), r) for r in write_records(write)]

        def writing() -> int:
            results = list(adapter.write(changes))
            assert {r.action for r in results} == {"created"}, {r.action for r in results}
            return len(results)

        budget = math.ceil(write / page_size) + 5
        phases.append(_measure("write to empty", fake, timer, writing, budget, None, again))
        written = sum(1 for r in again.requests if r["status"] == 200)
        adapter.close()
    return {
        "machine": machine(),
        "sizes": {
            "contacts": contacts,
            "changed": changed,
            "write": write,
            "page_size": page_size,
            "seed": seed,
        },
        "seed_s": seed_s,
        "replayed_writes": written,
        "phases": [p.as_dict() for p in phases],
    }


def machine() -> dict[str, Any]:
    """Where and when the run happened."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "requests": requests.__version__,
    }


def render(results: dict[str, Any], note: str = "") -> str:
    """The results as a Markdown page."""
    m, z = results["machine"], results["sizes"]
    lines = [
        "# CiviCRM benchmark: results",
        "",
        "Written by `uv run python -m bench.civicrm_bench --write-results`; do not edit.",
        "",
        f"Run {m['date']} on {m['arch']}, {m['cpu']} ({m['cpus']} CPUs), {m['system']}, "
        f"Python {m['python']}, requests {m['requests']}. The fake CiviCRM "
        f"(`connector_civicrm.testing.FakeCiviCRM`) on loopback, in the same process (its "
        f"handler threads share the GIL with the adapter). {z['contacts']:,} contacts seeded "
        f"with emails, phones, addresses, groups and tags (seed {z['seed']}, "
        f"{results['seed_s']:.1f} s, not timed); {z['changed']} changed; {z['write']:,} "
        f"written into an empty fake; page size = write batch = {z['page_size']}. "
        "One run of each phase.",
    ]
    if note:
        lines += ["", note]
    lines += [
        "",
        "| phase | requests (budget) | records (budget) | wall s | waiting on server s "
        "(share) | fake's handling s | our code s (share) | raw replay s (fake's handling) "
        "| ours/raw wall | within budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["phases"]:
        rb = f" (≤ {p['record_budget']})" if p["record_budget"] is not None else ""
        lines.append(
            f"| {p['name']} | {p['requests']} (≤ {p['budget']}) | {p['records']:,}{rb} "
            f"| {p['wall_s']:.2f} | {p['waiting_s']:.2f} ({p['waiting_share']:.1%}) "
            f"| {p['server_s']:.2f} | {p['ours_s']:.3f} ({p['ours_share']:.1%}) "
            f"| {p['raw_s']:.2f} ({p['raw_server_s']:.2f}) | {p['ratio_to_raw']:.3f} "
            f"| {'yes' if p['within_budget'] else '**no**'} |"
        )
    lines += [
        "",
        "- *requests* are counted by the fake (every HTTP request it received); *records* are "
        "the records the adapter yielded (written, for the write phase).",
        "- *waiting on server* is the client-side time inside the adapter's requests "
        "`Session.send` (a timing hook wrapped around the real method): the fake's handling "
        "plus loopback, HTTP parsing in urllib3 and reading the body. *fake's handling* is "
        "the sum of the fake's own per-request `duration` (from reading the request to "
        "writing the answer). *our code* is wall minus waiting: building the APIv4 params, "
        "encoding them, decoding the JSON, mapping rows to records and planning writes.",
        "- *raw replay* posts the very same requests (URL, headers, form fields) with a plain "
        "`requests.Session` loop in the same run and decodes each answer's JSON: the floor "
        "any client pays. Reads replay on the same fake right after the adapter's run; writes "
        "replay into a second empty fake (the same creates, batch by batch). "
        "*ours/raw wall* = our wall time / the replay's (1.0 = no overhead).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print (or write) the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--write", type=int, default=1_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="a line added to the results page")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    results = run_bench(args.contacts, args.changed, args.write, args.page_size, args.seed)
    page = render(results, args.note)
    print(json.dumps(results, indent=2) if args.json else page)
    if args.write_results:
        RESULTS.write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
