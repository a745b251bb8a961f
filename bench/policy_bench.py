"""Benchmark the policy engine against a hand-written function and other policy engines.

Run ``uv run python -m bench.policy_bench`` (after ``bench/setup`` for OPA and Cerbos);
``--write-results`` records the run in bench/RESULTS.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import harness, memory, results
from bench.data import make_records
from bench.peers import PEERS

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _peers(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip() and part != "none"]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {unknown}; known: {sorted(PEERS)}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; defaults are the full run recorded in RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.policy_bench", description=__doc__)
    add = parser.add_argument
    add("--records", type=int, default=100_000, help="records for throughput and fan-out")
    add("--peer-records", type=int, default=5_000, help="records the (slow) peers decide")
    add("--fanout-policies", type=int, default=1_000, help="recipient policies (0: skip)")
    add(
        "--naive-records",
        type=int,
        default=1_000,
        help="records for the every-policy loop that checks the PolicySet",
    )
    add("--peers", type=_peers, default=list(PEERS), help="comma-separated, or none")
    add(
        "--memory-sizes",
        type=_sizes,
        default=[10_000, 100_000, 1_000_000],
        help="comma-separated record counts streamed in child processes ('' to skip)",
    )
    add("--repeats", type=int, default=7, help="runs per measurement (the best counts)")
    add("--peer-repeats", type=int, default=3, help="runs per peer")
    add("--seed", type=int, default=1, help="seed of the synthetic records")
    add(
        "--strict-peers",
        action="store_true",
        default=os.environ.get("CI") == "true",
        help="a peer that cannot start is an error, not 'not measured' (default under CI)",
    )
    add("--json", action="store_true", help="print the results as JSON")
    add("--write-results", action="store_true", help=f"write {RESULTS_MD.name}")
    return parser.parse_args(argv)


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _timing(t: harness.Timing) -> dict[str, Any]:
    return {
        "name": t.name,
        "records": t.records,
        "best_s": t.best,
        "rate": t.rate,
        "runs": len(t.runs),
    }


def _peer(p: harness.PeerResult) -> dict[str, Any]:
    t = p.timing
    return {
        "name": p.name,
        "description": p.description,
        "error": p.error,
        "startup_s": p.startup,
        "records": t.records if t else None,
        "best_s": t.best if t else None,
        "rate": t.rate if t else None,
    }


def _fanout(f: harness.FanoutResult) -> dict[str, Any]:
    return {
        "policies": f.policies,
        "compile_s": f.compile_seconds,
        "shares": f.shares,
        "one_policy": _timing(f.one_policy),
        "policy_set": _timing(f.policy_set),
        "naive": _timing(f.naive),
        "ratio": f.ratio,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement the arguments ask for, as JSON-ready results with their ratios."""
    out: dict[str, Any] = {"machine": results.machine(), "versions": results.peer_versions()}
    out["config"] = {
        k: getattr(args, k)
        for k in (
            "records",
            "peer_records",
            "fanout_policies",
            "naive_records",
            "memory_sizes",
            "repeats",
            "peer_repeats",
            "seed",
        )
    }
    records = make_records(args.records, args.seed)
    _progress(f"throughput: {args.records:,} records, best of {args.repeats}")
    out["throughput"] = {
        n: _timing(t) for n, t in harness.throughput(records, args.repeats).items()
    }
    out["peers"] = []
    if args.peers:
        _progress(f"peers {', '.join(args.peers)}: {args.peer_records:,} records each")
        found = harness.measure_peers(
            args.peers, records[: args.peer_records], args.peer_repeats, strict=args.strict_peers
        )
        out["peers"] = [_peer(p) for p in found]
    out["fanout"] = None
    if args.fanout_policies:
        _progress(f"fan-out: {args.fanout_policies:,} policies over {args.records:,} records")
        out["fanout"] = _fanout(
            harness.fanout(records, args.fanout_policies, args.repeats, args.naive_records)
        )
    del records
    out["memory"] = []
    if args.memory_sizes:
        _progress(f"memory: streaming {', '.join(f'{s:,}' for s in args.memory_sizes)} records")
        out["memory"] = memory.measure(args.memory_sizes)
    out["ratios"] = ratios(out)
    out["verdicts"] = results.verdicts(out["ratios"])
    return out


def ratios(out: dict[str, Any]) -> dict[str, Any]:
    """The ratios the issue sets targets for, from baselines measured in the same run."""
    ours = out["throughput"]["compiled.apply"]["rate"]
    peer_rates = [p["rate"] for p in out["peers"] if p["rate"] is not None]
    return {
        "compiled_vs_handwritten": ours / out["throughput"]["hand-written"]["rate"],
        "evaluate_vs_handwritten": out["throughput"]["compiled.evaluate"]["rate"]
        / out["throughput"]["hand-written"]["rate"],
        "compiled_vs_best_peer": ours / max(peer_rates) if peer_rates else None,
        "handwritten_vs_best_peer": out["throughput"]["hand-written"]["rate"] / max(peer_rates)
        if peer_rates
        else None,
        "fanout_vs_one_policy": out["fanout"]["ratio"] if out["fanout"] else None,
        "memory_flat": memory.is_flat(out["memory"]) if len(out["memory"]) > 1 else None,
    }


def render_text(out: dict[str, Any]) -> str:
    """The table printed on stdout: the same tables as RESULTS.md, without the notes."""
    return results.render_markdown(out).split("\n## Notes")[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 0 even when a target is not met (the table says so)."""
    args = parse_args(argv)
    out = run(args)
    out["command"] = "python -m bench.policy_bench " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    print(json.dumps(out, indent=2) if args.json else render_text(out))
    if args.write_results:
        RESULTS_MD.write_text(results.render_markdown(out) + "\n", encoding="utf-8")
        _progress(f"wrote {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
