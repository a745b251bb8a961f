"""Reads proportional to the changes (issue #13): a CSV source rerun against hashing the file.

One process, one network (CSV source of ``bench/data.py`` contacts -> memory target, SQLite
state). After a first run it times, in alternating rounds: the SHA-256 of the source file
(``file_cursor``), an unchanged rerun, a rerun after one changed row, and the same 1-row rerun
with the stored row fingerprints removed (every row decoded, as before fingerprints). Each
figure is also given as a ratio to the hashing time of the same round.

    uv run --no-sync python -m bench.reads_bench --records 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from connector_csv import CsvAdapter
from connector_csv.source import file_cursor

from bench.data import iter_records
from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import load_job
from connector_core.sync.runner import run_job
from connector_core.sync.state import StateStore
from connector_core.testing import MemoryAdapter, reset_memory_stores

HEADER = ["id", "first_name", "last_name", "email", "phone", "street_address", "postal_code"]
HEADER += ["city", "region", "country", "local_ok"]
CONFIG = """\
version: 1
network: {name: Reads benchmark}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  members:
    adapter: csv
    settings: {path: members.csv}
    mapping: {consent.local_organizing: local_ok}
  out: {adapter: memory, settings: {store: out}}
jobs:
  share: {source: members, target: out, policy: share.yaml}
state: {url: "sqlite:///%(root)s/state.db"}
"""
POLICY = """\
policy: share
require_consent: [local_organizing]
rules:
  - allow: northerners who agreed
    when: {region: North}
fields:
  first_name: show
  city: show
  phone: last4
"""


def _row(record: dict[str, Any]) -> list[str]:
    granted = record["consent"].get("local_organizing", {}).get("granted")
    ok = "" if granted is None else ("yes" if granted else "no")
    return [str(record.get(name) or "") for name in HEADER[:-1]] + [ok]


def write_network(root: Path, records: int) -> list[list[str]]:
    """connector.yaml, the policy and the source file; returns the rows (for edits)."""
    (root / "connector.yaml").write_text(CONFIG % {"root": root}, encoding="utf-8")
    (root / "share.yaml").write_text(POLICY, encoding="utf-8")
    rows = [_row(r) for r in iter_records(records)]
    write_rows(root, rows)
    return rows


def write_rows(root: Path, rows: list[list[str]]) -> None:
    with (root / "members.csv").open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        writer.writerows(rows)


def timed_run(root: Path) -> tuple[float, dict[str, Any]]:
    config = load_config(root / "connector.yaml", {"csv": CsvAdapter, "memory": MemoryAdapter})
    job = load_job(config, "share", context=MaskContext.with_key(b"bench"))
    store = StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=b"reads-bench-ledger-key")
    try:
        gc.collect()
        start = time.perf_counter()
        result = run_job(job, store, reconcile=False)
        seconds = time.perf_counter() - start
    finally:
        job.close()
        store.close()
    assert result.aborted is None, result.aborted
    return seconds, result.counts.as_dict()


def timed_hash(path: Path) -> float:
    gc.collect()
    start = time.perf_counter()
    file_cursor(path)
    return time.perf_counter() - start


def forget_fingerprints(root: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{root / 'state.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM row_fingerprints"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline", action="store_true", help="also time the 1-row rerun without fingerprints"
    )
    args = parser.parse_args()
    reset_memory_stores()
    with tempfile.TemporaryDirectory(prefix="reads-bench-") as tmp:
        root = Path(tmp)
        rows = write_network(root, args.records)
        path = root / "members.csv"
        size = path.stat().st_size
        first, counts = timed_run(root)
        print(f"{args.records} rows, {size / 1e6:.1f} MB; first run {first:.2f} s {counts}")
        figures: dict[str, list[float]] = {"hash": [], "unchanged": [], "one": [], "none": []}
        ratios: dict[str, list[float]] = {"unchanged": [], "one": [], "none": []}
        for n in range(args.rounds):
            hashed = timed_hash(path)
            unchanged, _ = timed_run(root)
            row = rows[(n * 7919) % len(rows)]
            row[7] = "Hull" if row[7] != "Hull" else "York"
            write_rows(root, rows)
            one, one_counts = timed_run(root)
            none = float("nan")
            if args.baseline:
                row[7] = "Leeds"
                write_rows(root, rows)
                forget_fingerprints(root)
                none, _ = timed_run(root)
            for name, value in (("hash", hashed), ("unchanged", unchanged), ("one", one)):
                figures[name].append(value)
            figures["none"].append(none)
            for name, value in (("unchanged", unchanged), ("one", one), ("none", none)):
                ratios[name].append(value / hashed)
            print(
                f"round {n + 1}: sha256 {hashed:.3f} s; unchanged rerun {unchanged:.3f} s "
                f"({unchanged / hashed:.1f}x); 1 row changed {one:.3f} s ({one / hashed:.1f}x, "
                f"read={one_counts['read']}); 1 row changed without fingerprints {none:.3f} s "
                f"({none / hashed:.1f}x)"
            )
        print(
            "median: "
            + "; ".join(f"{k} {statistics.median(v):.3f} s" for k, v in figures.items())
            + " | ratios to sha256: "
            + "; ".join(f"{k} {statistics.median(v):.1f}x" for k, v in ratios.items())
        )


if __name__ == "__main__":
    main()
