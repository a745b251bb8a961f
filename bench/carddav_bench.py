"""CardDAV write benchmark: our adapter against a raw `requests` PUT loop, on real servers.

Starts Radicale and Xandikos on loopback and measures, side by side in one run:

- a first sync of N contacts into an empty book: our adapter (``write``, with its one
  multiget per batch) against a raw PUT loop of the very same vCards on one keep-alive
  session (the server is the floor; the target is ours/raw >= 0.9), at concurrency 1 and 4;
- the same N cards pushed by vdirsyncer from a vdir (a folder of .vcf files) into an empty
  book (``vdirsyncer discover`` + ``vdirsyncer sync`` as a subprocess, ``"a wins"``);
- the requests of a run after 10 contacts changed (target: at most 10 writes + 3 others),
  and of a run with nothing changed (target: at most 2 requests).

Each timed run gets a server process and an empty book of its own (see :func:`fresh_book`),
and the contenders alternate their order from round to round.

    uv run python -m bench.carddav_bench [--cards 1000] [--repeats 5] [--write-results]

``--servers nextcloud`` measures a real Nextcloud instead (``CONNECTOR_LIVE_NEXTCLOUD_URL``,
``_USER`` and ``_PASSWORD``, as for the live tests): ours against the raw PUT loop, each run
into a new book, the median of alternating rounds.

``--write-results`` writes bench/RESULTS-carddav.md (bench/RESULTS.md belongs to the policy
benchmark, which rewrites it and links this file). vdirsyncer comes with the ``bench``
dependency group.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import requests
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.testing import CountingSession, run_server
from connector_nextcloud.vcard import MAPPED_FIELDS, CardFormat, render_card

from bench.results import cpu_model
from connector_core.adapters import Change
from connector_core.credentials import SecretRef, StaticSecrets
from connector_core.records import Record
from connector_core.sync.keys import target_key
from connector_core.testing import sample_records

RESULTS = Path(__file__).with_name("RESULTS-carddav.md")


def _records(n: int) -> list[tuple[str, Record]]:
    return [(target_key("bench", r["id"], b"bench key secret"), r) for r in sample_records(n)]


def raw_put_loop(
    book: str, records: list[tuple[str, Record]], auth: tuple[str, str] | None = None
) -> float:
    """Seconds for a plain PUT loop (If-None-Match: *) of pre-rendered cards."""
    cards = _cards(records)
    session = requests.Session()
    session.auth = auth
    headers = {"Content-Type": "text/vcard; charset=utf-8", "If-None-Match": "*"}
    start = time.perf_counter()
    for key, data in cards:
        response = session.put(f"{book}{key}.vcf", data=data, headers=headers)
        response.raise_for_status()
    return time.perf_counter() - start


def _cards(records: list[tuple[str, Record]]) -> list[tuple[str, bytes]]:
    fmt = CardFormat()
    return [(k, render_card(r, fmt, uid=k, fields=MAPPED_FIELDS).encode()) for k, r in records]


VDIRSYNCER_CONFIG = """\
[general]
status_path = "{status}"

[pair bench]
a = "bench_vdir"
b = "bench_book"
collections = null
conflict_resolution = "a wins"

[storage bench_vdir]
type = "filesystem"
path = "{vdir}"
fileext = ".vcf"

[storage bench_book]
type = "carddav"
url = "{book}"
"""


def count_cards(book: str, auth: tuple[str, str] | None = None) -> int:
    """The number of members of `book` (one PROPFIND, Depth 1)."""
    response = requests.request(
        "PROPFIND",
        book,
        auth=auth,
        data=b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/>'
        b"</d:prop></d:propfind>",
        headers={"Depth": "1", "Content-Type": "application/xml"},
        timeout=60,
    )
    response.raise_for_status()
    hrefs = [h.text or "" for h in ElementTree.fromstring(response.content).iter("{DAV:}href")]
    return sum(1 for h in hrefs if h.endswith(".vcf"))


def vdirsyncer_push(book: str, records: list[tuple[str, Record]], folder: Path) -> float:
    """Seconds for ``vdirsyncer discover`` + ``sync`` to push the cards from a vdir to `book`."""
    vdir = folder / "vdir"
    vdir.mkdir(parents=True)
    for key, data in _cards(records):
        (vdir / f"{key}.vcf").write_bytes(data)
    config = folder / "config"
    config.write_text(
        VDIRSYNCER_CONFIG.format(status=folder / "status", vdir=vdir, book=book), encoding="utf-8"
    )
    start = time.perf_counter()
    for command in ("discover", "sync"):
        done = subprocess.run(
            [sys.executable, "-m", "vdirsyncer", "-c", str(config), command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"vdirsyncer {command} failed:\n{done.stdout}{done.stderr}")
    elapsed = time.perf_counter() - start
    held = count_cards(book)
    assert held == len(records), f"vdirsyncer left {held} cards, not {len(records)}"
    return elapsed


def adapter_write(
    book: str,
    records: list[tuple[str, Record]],
    concurrency: int,
    auth: tuple[str, str] | None = None,
) -> float:
    """Seconds for our adapter to write the same records (rendering included)."""
    if auth is None:
        settings = NextcloudSettings(address_book_url=book, concurrency=concurrency)
        adapter = NextcloudAdapter(settings)
    else:
        settings = NextcloudSettings(
            address_book_url=book,
            concurrency=concurrency,
            user=auth[0],
            app_password=SecretRef(secret="app_password"),
        )
        adapter = NextcloudAdapter(settings, StaticSecrets({"app_password": auth[1]}))
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


MEASURES = ("raw", "ours", "vdirsyncer")


@contextlib.contextmanager
def fresh_book(kind: str, folder: Path) -> Iterator[str]:
    """An empty address book on a `kind` server started just for it (stopped on exit).

    Every measured run gets a new server process over a new folder, so no run inherits
    another's books, caches or heap (Xandikos slows down as its process ages), and a
    run's place in the sequence cannot favour one contender."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp, run_server(kind, Path(tmp)) as server:
        yield server.new_address_book()


def _measure(name: str, book: str, records: list[tuple[str, Record]], folder: Path) -> float:
    if name == "raw":
        return raw_put_loop(book, records)
    if name == "ours":
        return adapter_write(book, records, 1)
    return vdirsyncer_push(book, records, folder)


def _progress(message: str) -> None:
    print(f"[carddav] {message}", file=sys.stderr, flush=True)


def bench_server(kind: str, n: int, repeats: int, folder: Path) -> dict[str, Any]:
    """Every measurement on one kind of server, each run on a fresh server and book.

    The contenders run in rounds, in the order raw, ours, vdirsyncer and then reversed, so
    that a machine slowing down or speeding up during the run hurts all alike."""
    records = _records(n)
    runs: dict[str, list[float]] = {name: [] for name in MEASURES}
    for i in range(repeats):
        for name in MEASURES if i % 2 == 0 else reversed(MEASURES):
            with fresh_book(kind, folder / "servers") as book:
                seconds = _measure(name, book, records, folder / f"{name}{i}")
            runs[name].append(seconds)
            _progress(f"{kind} {name} {i + 1}/{repeats}: {n / seconds:.1f} cards/s")
    raw, ours, vdir = (min(runs[name]) for name in MEASURES)
    with fresh_book(kind, folder / "servers") as book:
        ours4 = adapter_write(book, records, 4)
    with fresh_book(kind, folder / "servers") as book:
        adapter_write(book, records, 1)
        counts = request_counts(book, records)
    return {
        "cards": n,
        "runs": runs,
        "raw_per_s": n / raw,
        "ours_per_s": n / ours,
        "ours_c4_per_s": n / ours4,
        "ratio": raw / ours,
        "ratio_median": statistics.median(
            r / o for r, o in zip(runs["raw"], runs["ours"], strict=True)
        ),
        "vdirsyncer_per_s": n / vdir,
        "ratio_vdirsyncer": vdir / ours,
        **counts,
    }


NEXTCLOUD_ENV = (
    "CONNECTOR_LIVE_NEXTCLOUD_URL",
    "CONNECTOR_LIVE_NEXTCLOUD_USER",
    "CONNECTOR_LIVE_NEXTCLOUD_PASSWORD",
)
NEXTCLOUD_HEADING = "## A real Nextcloud"
_MKCOL = (
    b'<?xml version="1.0" encoding="utf-8"?><d:mkcol xmlns:d="DAV:" '
    b'xmlns:c="urn:ietf:params:xml:ns:carddav"><d:set><d:prop><d:resourcetype><d:collection/>'
    b"<c:addressbook/></d:resourcetype></d:prop></d:set></d:mkcol>"
)


@contextlib.contextmanager
def nextcloud_book(url: str, auth: tuple[str, str], name: str) -> Iterator[str]:
    """A new, empty book on a real Nextcloud (MKCOL), deleted on exit.

    A Nextcloud allows 10 books per user and 10 creations per hour by default: a run of
    `repeats` rounds creates 2 x repeats books (raise ``rateLimitAddressBookCreation`` on a
    test server for the run)."""
    book = f"{url}/remote.php/dav/addressbooks/users/{auth[0]}/{name}/"
    made = requests.request(
        "MKCOL",
        book,
        data=_MKCOL,
        auth=auth,
        timeout=60,
        headers={"Content-Type": "application/xml"},
    )
    if made.status_code != 201:
        raise RuntimeError(f"MKCOL {book} answered {made.status_code}: {made.text[:300]}")
    try:
        yield book
    finally:
        requests.delete(book, auth=auth, timeout=120)


def bench_nextcloud(n: int, repeats: int) -> dict[str, Any]:
    """First sync of `n` cards on a real Nextcloud: our adapter against the raw PUT loop,
    in alternating rounds, each into a new book; the median of the rounds' ratios counts
    (a shared server's time moves with its load, so the best runs are not compared)."""
    url, user, password = (os.environ[v] for v in NEXTCLOUD_ENV)
    auth = (user, password)
    records = _records(n)
    runs: dict[str, list[float]] = {"raw": [], "ours": []}
    stamp = datetime.now(UTC).strftime("%H%M%S")
    for i in range(repeats):
        for name in ("raw", "ours") if i % 2 == 0 else ("ours", "raw"):
            with nextcloud_book(url.rstrip("/"), auth, f"cc-bench-{stamp}-{name}-{i}") as book:
                if name == "raw":
                    seconds = raw_put_loop(book, records, auth)
                else:
                    seconds = adapter_write(book, records, 1, auth)
                assert count_cards(book, auth) == n
            runs[name].append(seconds)
            _progress(f"nextcloud {name} {i + 1}/{repeats}: {n / seconds:.1f} cards/s")
    ratios = [r / o for r, o in zip(runs["raw"], runs["ours"], strict=True)]
    return {
        "cards": n,
        "runs": runs,
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "raw_per_s_median": n / statistics.median(runs["raw"]),
        "ours_per_s_median": n / statistics.median(runs["ours"]),
        "version": _nextcloud_version(url),
    }


def _nextcloud_version(url: str) -> str:
    try:
        return str(
            requests.get(f"{url.rstrip('/')}/status.php", timeout=10).json()["versionstring"]
        )
    except (requests.RequestException, ValueError, KeyError):
        return "unknown"


def render_nextcloud(results: dict[str, Any]) -> str:
    """The Nextcloud section of the results page."""
    m, r = results["machine"], results["nextcloud"]
    rounds = ", ".join(f"{x:.2f}" for x in r["ratios"])
    return "\n".join(
        [
            NEXTCLOUD_HEADING,
            "",
            f"Run {m['date']} on {m['cpu']} ({m['cpus']} CPUs), {m['system']}, Python "
            f"{m['python']}; Nextcloud {r['version']} (PHP 8.2 built-in server, 4 workers, "
            "MariaDB) on loopback, app password, the same machine. Written by "
            "`uv run python -m bench.carddav_bench --servers nextcloud --write-results` with "
            "`CONNECTOR_LIVE_NEXTCLOUD_URL`, `_USER` and `_PASSWORD` set. Each run writes "
            f"{r['cards']} cards into a new book; {m['repeats']} rounds, raw and ours in "
            "alternating order.",
            "",
            "| server | cards | raw PUT loop /s (median) | ours /s (median) "
            "| ours/raw, median round (≥ 0.9) | ours/raw per round |",
            "|---|---|---|---|---|---|",
            f"| Nextcloud {r['version']} | {r['cards']} | {r['raw_per_s_median']:.1f} "
            f"| {r['ours_per_s_median']:.1f} | {r['ratio_median']:.2f} | {rounds} |",
            "",
            "The server's time per card dominates on both sides (PHP and MariaDB on the same "
            "two cores, shared with other work during the run: single runs ranged from "
            f"{r['cards'] / max(max(v) for v in r['runs'].values()):.1f} to "
            f"{r['cards'] / min(min(v) for v in r['runs'].values()):.1f} cards/s, hence the "
            "median of the rounds' own ratios); ours adds one addressbook-multiget per page of "
            "changes and renders the cards, the raw loop PUTs pre-rendered cards.",
            "",
        ]
    )


def write_results(page: str | None, nextcloud: str | None) -> None:
    """Rewrite RESULTS-carddav.md: the servers' part and/or the Nextcloud section, keeping
    the part not measured in this run."""
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    head, _, tail = old.partition(NEXTCLOUD_HEADING)
    head = page if page is not None else head.rstrip("\n") + "\n"
    tail = nextcloud if nextcloud is not None else (NEXTCLOUD_HEADING + tail if tail else "")
    RESULTS.write_text(head + ("\n" + tail if tail else ""), encoding="utf-8")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(repeats: int) -> dict[str, Any]:
    """Where and when the run happened, and the versions measured."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "repeats": repeats,
        "versions": {d: _version(d) for d in ("radicale", "xandikos", "vdirsyncer", "requests")},
    }


def render(results: dict[str, Any]) -> str:
    """The results as a Markdown page."""
    m = results["machine"]
    versions = ", ".join(f"{d} {v}" for d, v in m["versions"].items())
    lines = [
        "# CardDAV benchmark: results",
        "",
        "Written by `uv run python -m bench.carddav_bench --write-results`; do not edit.",
        "",
        f"Run {m['date']} on {m['cpu']} ({m['cpus']} CPUs), {m['system']}, Python "
        f"{m['python']}; {versions}. Servers on loopback, no authentication. Every run writes "
        "into an empty book on a server process started for it alone; the contenders run in "
        f"{m['repeats']} rounds, in alternating order, and throughput is the best run of each.",
        "",
        "| server | cards | raw PUT loop /s | ours /s | ours/raw (≥ 0.9) "
        "| ours/raw, median round | vdirsyncer /s | ours/vdirsyncer | ours, concurrency 4 /s "
        "| 10 changed: writes + other (≤ 10 + 3) | unchanged: requests (≤ 2) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["servers"].items():
        ten = r["ten_changed"]
        lines.append(
            f"| {name} | {r['cards']} | {r['raw_per_s']:.0f} | {r['ours_per_s']:.0f} "
            f"| {r['ratio']:.2f} | {r['ratio_median']:.2f} | {r['vdirsyncer_per_s']:.0f} "
            f"| {r['ratio_vdirsyncer']:.2f} "
            f"| {r['ours_c4_per_s']:.0f} | {ten['writes']} + {ten['other']} "
            f"| {r['unchanged']} |"
        )
    lines += [
        "",
        "Ratios are throughput ratios (ours/raw = raw seconds / our seconds), of the best runs; "
        "the median round is the median of each round's own ours/raw, a check on the best. "
        "Per-card times grow with the book on both servers (Xandikos commits every card to "
        "git) and vary by ±15% between identical runs on this shared machine. vdirsyncer's time "
        "is `vdirsyncer discover` plus `vdirsyncer sync` of a vdir holding the same cards into "
        "an empty book, as subprocesses (interpreter start-up included); the book is then "
        "checked to hold every card. Ours includes rendering the vCards; the raw loop and the "
        "vdir get them pre-rendered.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark on both servers and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--servers", default="radicale,xandikos")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of runs, best kept")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine(args.repeats), "servers": {}}
    kinds = args.servers.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            if kind == "nextcloud":
                results["nextcloud"] = bench_nextcloud(args.cards, args.repeats)
            else:
                results["servers"][kind] = bench_server(
                    kind, args.cards, args.repeats, Path(tmp) / kind
                )
    page = render(results) if results["servers"] else None
    section = render_nextcloud(results) if "nextcloud" in results else None
    print(json.dumps(results, indent=2) if args.json else (page or "") + (section or ""))
    if args.write_results:
        write_results(page, section)


if __name__ == "__main__":
    main()
