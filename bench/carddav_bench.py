"""CardDAV write benchmark: our adapter against a raw `requests` PUT loop, on real servers.

Starts Radicale and Xandikos on loopback and measures, side by side in one run:

- a first sync of N contacts into an empty book: our adapter (``write``, with its one
  multiget per batch) against a raw PUT loop of the very same vCards on one keep-alive
  session (the server is the floor; the target is ours/raw >= 0.9), at concurrency 1 and 4;
- the requests of a run after 10 contacts changed (target: at most 10 writes + 3 others),
  and of a run with nothing changed (target: at most 2 requests).

    uv run python -m bench.carddav_bench [--cards 1000] [--write-results]

``--write-results`` writes bench/RESULTS-carddav.md (bench/RESULTS.md belongs to the policy
benchmark, which rewrites it). vdirsyncer is not a dependency of the workspace yet, so the
comparison with it is not part of this run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.testing import CountingSession, DavServer, run_server
from connector_nextcloud.vcard import MAPPED_FIELDS, CardFormat, render_card

from connector_core.adapters import Change
from connector_core.records import Record
from connector_core.sync.keys import target_key
from connector_core.testing import sample_records

RESULTS = Path(__file__).with_name("RESULTS-carddav.md")


def _records(n: int) -> list[tuple[str, Record]]:
    return [(target_key("bench", r["id"]), r) for r in sample_records(n)]


def raw_put_loop(book: str, records: list[tuple[str, Record]]) -> float:
    """Seconds for a plain PUT loop (If-None-Match: *) of pre-rendered cards."""
    fmt = CardFormat()
    cards = [(k, render_card(r, fmt, uid=k, fields=MAPPED_FIELDS).encode()) for k, r in records]
    session = requests.Session()
    headers = {"Content-Type": "text/vcard; charset=utf-8", "If-None-Match": "*"}
    start = time.perf_counter()
    for key, data in cards:
        response = session.put(f"{book}{key}.vcf", data=data, headers=headers)
        response.raise_for_status()
    return time.perf_counter() - start


def adapter_write(book: str, records: list[tuple[str, Record]], concurrency: int) -> float:
    """Seconds for our adapter to write the same records (rendering included)."""
    settings = NextcloudSettings(address_book_url=book, concurrency=concurrency)
    adapter = NextcloudAdapter(settings)
    start = time.perf_counter()
    results = list(adapter.write([Change.upsert(k, r) for k, r in records]))
    elapsed = time.perf_counter() - start
    assert all(r.action == "created" for r in results), {r.action for r in results}
    adapter.close()
    return elapsed


def request_counts(book: str, records: list[tuple[str, Record]]) -> dict[str, Any]:
    """Requests made by a run after 10 changes and by a run with no change."""
    session = CountingSession()
    adapter = NextcloudAdapter(NextcloudSettings(address_book_url=book), session=session)
    cursor = list(adapter.read())[-1].cursor
    changed = [
        (k, {**r, "email": f"changed.{i}@example.net"}) for i, (k, r) in enumerate(records[:10])
    ]
    session.calls.clear()
    list(adapter.write([Change.upsert(k, r) for k, r in changed]))
    pages = list(adapter.read(cursor=cursor))
    ten = list(session.calls)
    session.calls.clear()
    list(adapter.read(cursor=pages[-1].cursor))
    none = list(session.calls)
    return {
        "ten_changed": {"writes": ten.count("PUT"), "other": len(ten) - ten.count("PUT")},
        "unchanged": len(none),
    }


def bench_server(server: DavServer, n: int) -> dict[str, Any]:
    """Every measurement on one server; each write goes into a new empty book."""
    records = _records(n)
    raws, ourss = [], []
    for _ in range(3):  # interleaved, so a server slowing down as it fills hurts both alike
        raws.append(raw_put_loop(server.new_address_book(), records))
        ourss.append(adapter_write(server.new_address_book(), records, 1))
    raw, ours = min(raws), min(ourss)
    ours4 = adapter_write(server.new_address_book(), records, 4)
    book = server.new_address_book()
    adapter_write(book, records, 1)
    return {
        "cards": n,
        "raw_per_s": n / raw,
        "ours_per_s": n / ours,
        "ours_c4_per_s": n / ours4,
        "ratio": raw / ours,
        **request_counts(book, records),
    }


def render(results: dict[str, dict[str, Any]]) -> str:
    """The results as a Markdown page."""
    lines = [
        "# CardDAV benchmark: results",
        "",
        "Written by `uv run python -m bench.carddav_bench --write-results`; do not edit.",
        "",
        "| server | cards | raw PUT loop /s | ours /s | ours/raw (≥ 0.9) | ours, concurrency 4 /s "
        "| 10 changed: writes + other (≤ 10 + 3) | unchanged: requests (≤ 2) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ten = r["ten_changed"]
        lines.append(
            f"| {name} | {r['cards']} | {r['raw_per_s']:.0f} | {r['ours_per_s']:.0f} "
            f"| {r['ratio']:.2f} | {r['ours_c4_per_s']:.0f} | {ten['writes']} + {ten['other']} "
            f"| {r['unchanged']} |"
        )
    lines += ["", "vdirsyncer: not measured (not a workspace dependency yet).", ""]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark on both servers and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--servers", default="radicale,xandikos")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.servers.split(","):
            with run_server(kind, Path(tmp) / kind) as server:
                results[kind] = bench_server(server, args.cards)
    print(json.dumps(results, indent=2) if args.json else render(results))
    if args.write_results:
        RESULTS.write_text(render(results), encoding="utf-8")


if __name__ == "__main__":
    main()
