"""The machine a run measured, the ratios it found, and how they are shown.

:func:`render_markdown` writes bench/RESULTS.md from a run's JSON-ready results, so the
file always states its date, machine and the baselines measured in the same run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.peers import PEERS_DIR
from bench.peers.cerbos import BINARY

TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "compiled_vs_handwritten": ("≥ 0.7", lambda v: v >= 0.7),
    "compiled_vs_best_peer": ("≥ 100", lambda v: v >= 100),
    "fanout_vs_one_policy": ("≤ 5", lambda v: v <= 5),
}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def peer_versions() -> dict[str, str | None]:
    """Versions of the peer engines installed for this run."""
    cerbos = BINARY.parent / "package.json"
    opa = list((PEERS_DIR / "opa").glob("opa_golib_python_bindings-*.dist-info"))
    return {
        "cedarpy": _version("cedarpy"),
        "casbin": _version("casbin"),
        f"@cerbos/{BINARY.name}": json.loads(cerbos.read_text())["version"]
        if cerbos.exists()
        else None,
        "opa-golib-python-bindings": opa[0].name.removesuffix(".dist-info").split("-")[1]
        if opa
        else None,
    }


def machine() -> dict[str, Any]:
    """Date and machine: architecture, CPU model, cores, Python."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def verdicts(ratios: dict[str, float | None]) -> dict[str, str]:
    """``met`` / ``NOT met`` / ``not measured`` for each target ratio."""
    out = {}
    for key, (_label, check) in TARGETS.items():
        value = ratios.get(key)
        out[key] = "not measured" if value is None else "met" if check(value) else "NOT met"
    return out


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _machine_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    rows = [
        ["date", m["date"]],
        ["machine (`uname -m`)", m["arch"]],
        ["CPU", m["cpu"]],
        ["cores", str(m["cores"])],
        ["Python", m["python"]],
        ["OS", m["os"]],
    ]
    rows += [[name, version or "not installed"] for name, version in results["versions"].items()]
    return _table(["", ""], rows)


def _ceiling_rows(ratios: dict[str, Any]) -> list[list[str]]:
    ceiling = ratios.get("handwritten_vs_best_peer")
    if ceiling is None:
        return []
    label = (
        "hand-written / best peer, records/s "
        "(the most an engine as fast as hand-written could show)"
    )
    return [[label, f"{ceiling:,.2f}", "—", "for reference"]]


def _ratio_lines(results: dict[str, Any]) -> list[str]:
    ratios, verdict = results["ratios"], results["verdicts"]
    labels = {
        "compiled_vs_handwritten": "our engine (compiled.apply) / hand-written, records/s",
        "compiled_vs_best_peer": "our engine (compiled.apply) / best peer, records/s",
        "fanout_vs_one_policy": "fan-out time / one policy's time, same records",
    }
    rows = []
    for key, label in labels.items():
        value = ratios.get(key)
        shown = "—" if value is None else f"{value:,.2f}"
        rows.append([label, shown, TARGETS[key][0], verdict[key]])
        if key == "compiled_vs_best_peer":
            rows += _ceiling_rows(ratios)
    memory = ratios.get("memory_flat")
    if memory is not None:
        rows.append(
            [
                "streaming peak memory, smallest to largest input",
                "flat" if memory else "grows",
                "flat",
                "met" if memory else "NOT met",
            ]
        )
    return _table(["ratio (same run)", "value", "target", "verdict"], rows)


def _throughput_lines(results: dict[str, Any]) -> list[str]:
    baseline = results["throughput"]["hand-written"]["rate"]
    rows = [
        [
            name,
            _rate(t["rate"]),
            f"{t['rate'] / baseline:.2f}",
            f"{t['best_s']:.3f}",
            str(t["runs"]),
        ]
        for name, t in results["throughput"].items()
    ]
    return _table(["engine", "records/s", "/ hand-written", "best run (s)", "runs"], rows)


def _peer_lines(results: dict[str, Any]) -> list[str]:
    ours = results["throughput"]["compiled.apply"]["rate"]
    rows = []
    for peer in results["peers"]:
        if peer["rate"] is None:
            rows.append([peer["name"], "not measured", "—", "—", peer["error"]])
            continue
        rows.append(
            [
                peer["name"],
                _rate(peer["rate"]),
                f"{ours / peer['rate']:,.0f}x",
                f"{peer['startup_s']:.2f}",
                peer["description"],
            ]
        )
    return _table(["peer", "records/s", "ours is faster by", "startup (s)", "how"], rows)


def _fanout_lines(results: dict[str, Any]) -> list[str]:
    f = results["fanout"]
    rows = [
        [t["name"], f"{t['records']:,}", _rate(t["rate"]), f"{t['best_s']:.3f}"]
        for t in (f["one_policy"], f["policy_set"], f["naive"])
    ]
    return [
        *_table(["run", "records", "records/s", "best run (s)"], rows),
        "",
        f"{f['policies']:,} policies loaded and compiled in {f['compile_s']:.1f} s; the "
        f"PolicySet made {f['shares']:,} shares ({f['shares'] / f['one_policy']['records']:.2f} "
        "per record). Ratio = PolicySet time / one policy's time over the same records.",
    ]


def _memory_lines(results: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{r['records']:,}",
            f"{r['shared']:,}",
            f"{r['tracemalloc_peak_mb']:.3f}",
            f"{r['maxrss_mb']:.1f}",
        ]
        for r in results["memory"]
    ]
    return _table(["records streamed", "shared", "tracemalloc peak (MB)", "peak RSS (MB)"], rows)


NOTES = """\
How to read this (details in bench/README.md):

- Every engine decides policy (a) (bench/policies/organizers-north.yaml) and every run's
  output is asserted identical to our engine's: the same shared record ids, the same
  projections. Nothing here is timed unless that assertion passed.
- Throughput is records decided per second, best of the runs listed; runs of our engine
  and the hand-written function are interleaved over the same records in memory.
- The peers run on the first {peer_records:,} of the records (they are too slow for all of
  them). Each peer gets a row decision plus one decision per field the policy names, in its
  natural batch API, with the decision input (region, is_deceased, consent) in its own
  format; building that input is part of its time, startup is not. Masking is shared
  Python code using the product's masks.
- Fan-out runs all {records:,} records through `PolicySet.shared` of {policies:,} recipient
  policies (policy (a) with another region, or a local group instead of the region), against
  policy (a) alone through `compiled.apply`. "every policy's evaluate" (on a sample) is the
  naive loop the PolicySet must equal, and is checked to.
- Memory: one child process per size streams lazily generated records through
  `compiled.apply`; the tracemalloc peak covers the streaming loop only, the RSS the whole
  process.
"""

# This file is rewritten on every policy run, so the other benchmarks' figures live in their
# own files and are linked from here.
OTHER_BENCHMARKS = """\
- CardDAV writes (Nextcloud adapter against a raw PUT loop and vdirsyncer, on Radicale and
  Xandikos): [RESULTS-carddav.md](RESULTS-carddav.md), written by
  `uv run python -m bench.carddav_bench --write-results`.
- CiviCRM adapter against the fake APIv4 server (request budgets, wall time, time in our
  code versus on the server, a plain `requests` replay): [RESULTS-civicrm.md](RESULTS-civicrm.md),
  written by `uv run python -m bench.civicrm_bench --write-results`.
- The write-ahead intent log's cost (a first run with and without it, SQLite and PostgreSQL):
  [RESULTS-intent.md](RESULTS-intent.md), written by
  `uv run python -m bench.intent_bench --write-results`.
- Start-up cost (`connector --help`, an unchanged `connector run`, as whole processes against
  `python -c pass`): [RESULTS-startup.md](RESULTS-startup.md), written by
  `uv run python -m bench.startup_bench --write-results`.
- CSV → policy → CSV end to end, `connector run` as a whole process against a stdlib `csv`
  script, petl, csvkit, DuckDB and a Singer pipeline (first run, reruns, start-up, state
  size, PostgreSQL/SQLite, 50 jobs over one source): [RESULTS-mirror.md](RESULTS-mirror.md),
  written by `uv run python -m bench.mirror_bench --write-results`."""


def render_markdown(results: dict[str, Any]) -> str:
    """bench/RESULTS.md for one run."""
    config = results["config"]
    lines = [
        "# Policy engine benchmark: results",
        "",
        "Written by `uv run python -m bench.policy_bench --write-results`; do not edit by hand.",
        f"Command: `{results['command']}`",
        "",
        "## Machine",
        "",
        *_machine_lines(results),
        "",
        "## Ratios measured in this run",
        "",
        *_ratio_lines(results),
        "",
        f"## Policy (a): our engine and the hand-written function ({config['records']:,} records)",
        "",
        *_throughput_lines(results),
    ]
    if results["peers"]:
        lines += [
            "",
            f"## Policy (a): the peers (first {config['peer_records']:,} records)",
            "",
            *_peer_lines(results),
        ]
    if results["fanout"]:
        lines += [
            "",
            f"## Fan-out: {config['fanout_policies']:,} recipient policies",
            "",
            *_fanout_lines(results),
        ]
    if results["memory"]:
        lines += ["", "## Memory while streaming", "", *_memory_lines(results)]
    notes = NOTES.format(
        peer_records=config["peer_records"],
        records=config["records"],
        policies=config["fanout_policies"],
    )
    lines += ["", "## Notes", "", notes.rstrip("\n")]
    lines += ["", "## Other benchmarks", "", OTHER_BENCHMARKS]
    return "\n".join(lines)
