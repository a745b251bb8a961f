"""The cost of the write-ahead intent log: a first run with it and without it, same run.

A CSV source of N members (every one shared, so every record is a create and goes through
the intent log) is synced into a memory target with a SQLite (or PostgreSQL) state store,
exactly as ``connector run`` does, twice per round: once as shipped, once with the intent
log switched off (``StateStore.write_ahead`` replaced by a no-op: the batches still go to
the target and are recorded, only the transaction written ahead of each is skipped). Rounds
alternate the order; each timed run gets a fresh state store and an empty target. The
verdict is the ratio of the medians, against the target of issue 10 (≤ 1.1).

    uv run python -m bench.intent_bench [--records 100000] [--rounds 3] [--batch 500]
                                        [--state sqlite|postgresql] [--write-results]

``--write-results`` writes bench/RESULTS-intent.md and the intent-log line of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector_csv import CsvAdapter

from bench.results import cpu_model
from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import load_job
from connector_core.sync.runner import run_job
from connector_core.sync.state import StateStore
from connector_core.testing import MemoryAdapter, reset_memory_stores

RESULTS = Path(__file__).with_name("RESULTS-intent.md")
SUMMARY = Path(__file__).with_name("RESULTS.md")
TARGET = 1.1
PG_SERVER = os.environ.get(
    "CONNECTOR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
)

CONFIG = """\
version: 1
network: {name: Intent log benchmark}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  members:
    adapter: csv
    settings: {path: members.csv, page_size: %(batch)d}
    mapping: {consent.local_organizing: local_ok}
  out: {adapter: memory, settings: {store: out, page_size: %(batch)d}}
jobs:
  share: {source: members, target: out, policy: share.yaml}
state: {url: "%(state)s"}
"""

POLICY = """\
policy: share
require_consent: [local_organizing]
rules:
  - allow: everyone who agreed
    when: {region: {exists: true}}
fields:
  first_name: show
  city: show
  phone: last4
"""


def write_network(root: Path, records: int, batch: int, state: str) -> None:
    """The benchmark's connector.yaml, policy and source CSV in `root`."""
    (root / "connector.yaml").write_text(CONFIG % {"batch": batch, "state": state}, "utf-8")
    (root / "share.yaml").write_text(POLICY, encoding="utf-8")
    with (root / "members.csv").open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "first_name", "city", "phone", "region", "local_ok"])
        for n in range(records):
            writer.writerow(
                [
                    f"M{n:07d}",
                    f"Name{n}",
                    f"City {n % 97}",
                    f"+44 113 496 {n % 10000:04d}",
                    "North",
                    "yes",
                ]
            )


def state_url(kind: str, root: Path, tag: str) -> str:
    """A fresh, empty state store of `kind` for one timed run."""
    if kind == "sqlite":
        return f"sqlite:///{root / f'state-{tag}.db'}"
    import sqlalchemy as sa

    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    name = f"connector_intent_bench_{tag}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{PG_SERVER}/{name}"


def timed_run(root: Path, url: str, *, intent_log: bool) -> tuple[float, dict[str, Any]]:
    """One first run of the job on a fresh store and an empty target; (seconds, counts)."""
    reset_memory_stores()
    config = load_config(root / "connector.yaml", {"csv": CsvAdapter, "memory": MemoryAdapter})
    job = load_job(config, "share", context=MaskContext.with_key(b"bench"))
    store = StateStore.open(url, ledger_key=b"intent-benchmark-ledger-key")
    if not intent_log:
        store.write_ahead = lambda job, changes, now=None, durable=True: None  # type: ignore[method-assign]
    try:
        gc.collect()
        start = time.perf_counter()
        result = run_job(job, store)
        seconds = time.perf_counter() - start
    finally:
        job.close()
        store.close()
    assert result.exit_code == 0, result.counts
    return seconds, result.counts.as_dict()


def run_bench(records: int, rounds: int, batch: int, state: str) -> dict[str, Any]:
    """Alternate with/without over `rounds`; every run's counts must be equal."""
    root = Path(tempfile.mkdtemp(prefix="intent-bench-"))
    times: dict[str, list[float]] = {"with": [], "without": []}
    counts: list[dict[str, Any]] = []
    try:
        write_network(root, records, batch, state_url(state, root, "probe"))
        for n in range(rounds):
            order = ("with", "without") if n % 2 == 0 else ("without", "with")
            for variant in order:
                url = state_url(state, root, f"{variant}{n}")
                text = (root / "connector.yaml").read_text(encoding="utf-8")
                text = re.sub(r'state: \{url: ".*"\}', f'state: {{url: "{url}"}}', text)
                (root / "connector.yaml").write_text(text, encoding="utf-8")
                seconds, run_counts = timed_run(root, url, intent_log=variant == "with")
                times[variant].append(seconds)
                counts.append(run_counts)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert all(c == counts[0] for c in counts), "every run must do the same work"
    ratio = statistics.median(times["with"]) / statistics.median(times["without"])
    return {
        "records": records,
        "rounds": rounds,
        "batch": batch,
        "state": state,
        "created": counts[0]["created"],
        "times": times,
        "ratio": ratio,
        "best_ratio": min(times["with"]) / min(times["without"]),
        "met": ratio <= TARGET,
    }


def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "Python": platform.python_version(),
    }


def summary_line(results: dict[str, Any]) -> str:
    """The line bench/RESULTS.md carries (one per state store kind)."""
    verdict = "met" if results["met"] else "NOT met"
    return (
        f"- Intent log ({results['state']}): a first run of {results['records']:,} records "
        f"takes **{results['ratio']:.2f}x** the time without it (median of "
        f"{results['rounds']} alternating rounds; target ≤ {TARGET}: {verdict}); "
        "[RESULTS-intent.md](RESULTS-intent.md), written by "
        "`uv run python -m bench.intent_bench --write-results`."
    )


def render(all_results: list[dict[str, Any]]) -> str:
    lines = [
        "# Intent log benchmark: results",
        "",
        "Written by `uv run python -m bench.intent_bench --write-results`; do not edit by hand.",
        "",
        "## Machine",
        "",
        "|  |  |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine().items()),
        "",
        "## A first run, with and without the intent log (same run, alternating rounds)",
        "",
        "| state store | records | batch | created | with (s, median) | without (s, median) "
        "| ratio (medians) | ratio (best runs) | target | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in all_results:
        lines.append(
            f"| {r['state']} | {r['records']:,} | {r['batch']} | {r['created']:,} "
            f"| {statistics.median(r['times']['with']):.2f} "
            f"| {statistics.median(r['times']['without']):.2f} | {r['ratio']:.2f} "
            f"| {r['best_ratio']:.2f} | ≤ {TARGET} | {'met' if r['met'] else 'NOT met'} |"
        )
    lines += [
        "",
        "## Method",
        "",
        "- Source: a CSV of N members, every one shared (each record is a create, so each",
        "  goes through the intent log once). Target: the in-process memory adapter, so that",
        "  the target's own cost does not hide the state store's: the worst case for the ratio.",
        "- *Without* replaces `StateStore.write_ahead` by a no-op in that run only; everything",
        "  else (batches written, recorded with the id map, ledger and cursor) is the same.",
        "- Each timed run: a fresh state store, an empty target, the job loaded as the CLI",
        "  loads it; the counts of every run are asserted equal.",
        "",
    ]
    return "\n".join(lines)


def write_summary(all_results: list[dict[str, Any]]) -> None:
    """Replace the intent-log lines of bench/RESULTS.md (kept by the policy bench too)."""
    text = SUMMARY.read_text(encoding="utf-8")
    text = re.sub(r"^- Intent log \(.*\n", "", text, flags=re.M)
    new = "".join(summary_line(r) + "\n" for r in all_results)
    text = text.replace("## Other benchmarks\n\n", "## Other benchmarks\n\n" + new, 1)
    SUMMARY.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--state", default="sqlite,postgresql")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    results = [
        run_bench(args.records, args.rounds, args.batch, kind) for kind in args.state.split(",")
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    if args.write_results:
        RESULTS.write_text(render(results), encoding="utf-8")
        write_summary(results)


if __name__ == "__main__":
    main()
