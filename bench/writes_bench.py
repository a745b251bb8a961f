"""Target writes of a CSV → CSV first run: the file replaced once per run, against once per batch.

A CSV source of N members (one in seven is shared, as in the issue's 1,000,000-row run where
143,908 were) is synced into an empty CSV target with a SQLite state store, as ``connector
run`` does, in two variants, each timed run in a fresh process (so peak RSS is its own):

- ``session`` — as shipped: the CSV adapter's deferred write session, one file replacement
  per run;
- ``per-batch`` — the path before sessions: every batch loads the whole target file, applies
  its changes and replaces the file (an immediate session over the old ``write``).

Rounds alternate the order; the verdict is the ratio of the medians (same machine, same
run), with the number of target file replacements per run and each variant's peak RSS.
Both variants' target files are asserted byte-identical before any time counts.

    uv run python -m bench.writes_bench [--records 100000] [--rounds 3] [--batch 500]
                                        [--write-results]

``--write-results`` writes bench/RESULTS-writes.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import connector_csv.session
from connector_csv import CsvAdapter
from connector_csv.table import load_table

from bench.results import cpu_model
from connector_core.adapters import Adapter, Change, WriteResult, WriteSession
from connector_core.config import load_config
from connector_core.files import replace_file
from connector_core.masks import MaskContext
from connector_core.sync.job import load_job
from connector_core.sync.runner import run_job
from connector_core.sync.state import StateStore

RESULTS = Path(__file__).with_name("RESULTS-writes.md")
SHARED_EVERY = 7  # one member in seven is in the North (shared)

CONFIG = """\
version: 1
network: {name: Writes benchmark, key_secret: {env: WRITES_BENCH_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  members:
    adapter: csv
    settings: {path: members.csv, page_size: %(batch)d}
    mapping: {consent.local_organizing: local_ok}
  out: {adapter: %(adapter)s, settings: {path: out.csv, page_size: %(batch)d}}
jobs:
  share: {source: members, target: out, policy: share.yaml}
"""

POLICY = """\
policy: share
require_consent: [local_organizing]
rules:
  - allow: the North
    when: {region: North}
fields:
  first_name: show
  last_name: show
  email: show
  city: show
  phone: last4
"""

REWRITES = [0]  # target file replacements in this process


def _counted(path: Path, *args: Any, **kwargs: Any) -> None:
    REWRITES[0] += 1
    replace_file(path, *args, **kwargs)


class PerBatchCsvAdapter(CsvAdapter):
    """The CSV target before write sessions: every batch loads and replaces the whole file."""

    name = "csv_per_batch"

    def open_writes(self) -> WriteSession:
        """The immediate session: each batch through :meth:`write`."""
        return Adapter.open_writes(self)

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Load the table, apply `changes`, replace the file (the code before sessions)."""
        path = self.settings.path
        records = [c.record for c in changes if c.record is not None]
        table = load_table(path, self.settings, self._columns.default_header(records))
        results = []
        for change in changes:
            if change.action == "delete":
                results.append(WriteResult(change.key, table.delete(change.key)))
            else:
                cells = self._render(change)
                results.append(WriteResult(change.key, table.upsert(change.key, cells)))
        if table.changed:
            _counted(path, table.dump, encoding=self.settings.write_encoding, mode=table.mode)
        return iter(results)


def write_network(root: Path, records: int) -> None:
    """The policy and the source CSV in `root`."""
    (root / "share.yaml").write_text(POLICY, encoding="utf-8")
    with (root / "members.csv").open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["id", "first_name", "last_name", "email", "city", "phone", "region", "local_ok"]
        )
        for n in range(records):
            writer.writerow(
                [
                    f"M{n:07d}",
                    f"Name{n}",
                    f"Surname{n % 1013}",
                    f"member{n}@example.org",
                    f"City {n % 97}",
                    f"+44 113 496 {n % 10000:04d}",
                    "North" if n % SHARED_EVERY == 0 else "South",
                    "yes",
                ]
            )


def one_run(root: Path, variant: str, batch: int) -> dict[str, Any]:
    """A first run into an empty target, in this process; its time, counts, rewrites, RSS."""
    adapter = "csv" if variant == "session" else "csv_per_batch"
    (root / "connector.yaml").write_text(CONFIG % {"batch": batch, "adapter": adapter}, "utf-8")
    (root / "out.csv").unlink(missing_ok=True)
    (root / "state.db").unlink(missing_ok=True)
    connector_csv.session.replace_file = _counted  # type: ignore[assignment]
    adapters: dict[str, type[Adapter]] = {"csv": CsvAdapter, "csv_per_batch": PerBatchCsvAdapter}
    config = load_config(root / "connector.yaml", adapters)
    job = load_job(config, "share", context=MaskContext.with_key(b"bench"))
    target_seconds = _time_target(job.target)
    store = StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=b"writes-bench-key")
    try:
        start = time.perf_counter()
        result = run_job(job, store)
        seconds = time.perf_counter() - start
    finally:
        job.close()
        store.close()
    assert result.exit_code == 0, result.counts
    return {
        "seconds": seconds,
        "target_seconds": target_seconds[0],
        "output": hashlib.sha256((root / "out.csv").read_bytes()).hexdigest(),
        "counts": result.counts.as_dict(),
        "rewrites": REWRITES[0],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _time_target(target: Adapter) -> list[float]:
    """Accumulate the seconds spent in the target's session (write and commit calls)."""
    spent = [0.0]
    open_writes = target.open_writes

    def timed(func: Any) -> Any:
        def call(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return list(func(*args)) if func.__name__ == "write" else func(*args)
            finally:
                spent[0] += time.perf_counter() - start

        return call

    def opened() -> WriteSession:
        start = time.perf_counter()
        session = open_writes()
        spent[0] += time.perf_counter() - start
        session.write = timed(session.write)  # type: ignore[method-assign]
        session.commit = timed(session.commit)  # type: ignore[method-assign]
        return session

    target.open_writes = opened  # type: ignore[method-assign]
    return spent


def in_child(root: Path, variant: str, batch: int) -> dict[str, Any]:
    """:func:`one_run` in a fresh interpreter."""
    # One key secret for every run, so that both variants write the same target keys.
    env = {**os.environ, "WRITES_BENCH_KEY_SECRET": "the writes benchmark's key secret"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.writes_bench", "--child", str(root), variant, str(batch)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    report: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return report


def run_bench(records: int, rounds: int, batch: int) -> dict[str, Any]:
    """Alternate the variants over `rounds`; outputs must be identical, counts equal."""
    root = Path(tempfile.mkdtemp(prefix="writes-bench-"))
    runs: dict[str, list[dict[str, Any]]] = {"session": [], "per-batch": []}
    try:
        write_network(root, records)
        for n in range(rounds):
            order = ("session", "per-batch") if n % 2 == 0 else ("per-batch", "session")
            for variant in order:
                runs[variant].append(in_child(root, variant, batch))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    counts = [r["counts"] for rs in runs.values() for r in rs]
    assert all(c == counts[0] for c in counts), "every run must do the same work"
    outputs = {r["output"] for rs in runs.values() for r in rs}
    assert len(outputs) == 1, "the variants wrote different files"
    target = {v: statistics.median(r["target_seconds"] for r in rs) for v, rs in runs.items()}
    median = {v: statistics.median(r["seconds"] for r in rs) for v, rs in runs.items()}
    return {
        "records": records,
        "rounds": rounds,
        "batch": batch,
        "shared": counts[0]["created"],
        "seconds": {v: [round(r["seconds"], 3) for r in rs] for v, rs in runs.items()},
        "median": median,
        "rewrites": {v: rs[0]["rewrites"] for v, rs in runs.items()},
        "rss_mb": {v: max(r["rss_mb"] for r in rs) for v, rs in runs.items()},
        "ratio": median["per-batch"] / median["session"],
        "target_median": target,
        "target_ratio": target["per-batch"] / target["session"],
    }


def render(results: list[dict[str, Any]]) -> str:
    """bench/RESULTS-writes.md."""
    lines = [
        "# Target writes: once per run vs once per batch (CSV → CSV, first run)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {cpu_model()} ({platform.python_version()}),"
        " SQLite state, each timed run a fresh process, variants alternated per round; every "
        "run's target file is byte-identical. *Target writes* is the time spent in the "
        "target's write session (opening it, every batch, the commit). "
        "`uv run python -m bench.writes_bench --write-results` reproduces it.",
        "",
        "| source rows | shared | batch | rewrites per run (per-batch → session) | whole run, "
        "median s (per-batch → session) | speed-up | target writes, median s (per-batch → "
        "session) | speed-up | peak RSS MB (per-batch → session) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['records']:,} | {r['shared']:,} | {r['batch']} | "
            f"{r['rewrites']['per-batch']} → {r['rewrites']['session']} | "
            f"{r['median']['per-batch']:.2f} → {r['median']['session']:.2f} | "
            f"{r['ratio']:.2f}x | {r['target_median']['per-batch']:.2f} → "
            f"{r['target_median']['session']:.2f} | {r['target_ratio']:.1f}x | "
            f"{r['rss_mb']['per-batch']:.0f} → {r['rss_mb']['session']:.0f} |"
        )
    lines += [
        "",
        "The per-batch path parses and writes the whole target for every batch: "
        "quadratic in the rows shared. The session reads the target once (nothing for a new "
        "file), answers each batch from an index and writes the file once.",
        "",
        "Whole-run times depend on everything else a run does (reading and deciding the "
        "source, the state store) and on the machine's load: read the ratio of the same "
        "round, and the target-write column, which isolates what changed.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Command line; ``--child ROOT VARIANT BATCH`` is one timed run (internal)."""
    if sys.argv[1:2] == ["--child"]:
        root, variant, batch = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        print(json.dumps(one_run(root, variant, batch)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    results = []
    for records in args.records:
        result = run_bench(records, args.rounds, args.batch)
        print(json.dumps(result, indent=2))
        results.append(result)
    if args.write_results:
        RESULTS.write_text(render(results), encoding="utf-8")


if __name__ == "__main__":
    main()
