"""Start-up cost of the `connector` command, measured as whole processes.

Times, in alternating rounds on one machine, the interpreter alone (``python -c pass``, the
floor), ``connector --help``, ``connector --version`` and ``connector run`` of an unchanged
job of the demo network (a copy of examples/demo whose jobs ran once before timing, so the
timed run reads nothing new, writes nothing and only checks), with the bytecode cache
written by warm-up runs as it is after the first use of an installation. Each figure is the
median of the rounds, with the CPU time (user + system) and peak RSS of the process
(``wait4``). Targets of issue 13: ``--help`` ≤ 0.25 s and an unchanged ``run`` ≤ 0.5 s; on a
loaded machine the CPU times and the ratios to ``python -c pass`` of the same run are what
to compare.

    uv run python -m bench.startup_bench [--rounds 5] [--write-results]

``--write-results`` writes bench/RESULTS-startup.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS-startup.md"
TARGETS = {"connector --help": 0.25, "connector run (unchanged job)": 0.5}


Run = tuple[float, float, int]  # wall seconds, CPU seconds, peak RSS in KiB


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Wall and CPU seconds and peak RSS (KiB) of one process running `argv`."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def demo_copy(root: Path) -> Path:
    """examples/demo and the policies it names, in `root`; returns the demo folder."""
    shutil.copytree(REPO / "policies", root / "policies")
    demo = root / "examples" / "demo"
    shutil.copytree(REPO / "examples" / "demo", demo)
    for stale in [*demo.glob("out/*.csv"), *demo.glob("state.db*"), demo / "anchors.log"]:
        stale.unlink(missing_ok=True)
    return demo


def measure(rounds: int) -> dict[str, list[Run]]:
    """Every contender's (wall, peak RSS) per round, rounds alternating the order."""
    connector = str(Path(sys.executable).with_name("connector"))
    env = {**os.environ, "CONNECTOR_DEMO_HASH_KEY": "demo-only-not-a-secret"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: imports read cached bytecode
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        demo = demo_copy(Path(tmp))
        for _ in range(2):  # the first run shares; the second leaves nothing to do
            timed([connector, "run", "--all"], demo, env)
        for warm_up in (["--help"], ["schema", "policy"], ["doctor"], ["policy", "test"]):
            with contextlib.suppress(RuntimeError):  # imports compiled once, as after install
                timed([connector, *warm_up], demo, env)
        contenders = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "connector --help": [connector, "--help"],
            "connector --version": [connector, "--version"],
            "connector run (unchanged job)": [connector, "run", "organizers-north"],
        }
        found: dict[str, list[Run]] = {name: [] for name in contenders}
        for i in range(rounds):
            order = list(contenders)
            if i % 2:
                order.reverse()
            for name in order:
                found[name].append(timed(contenders[name], demo, env))
    return found


def table(found: dict[str, list[Run]]) -> str:
    """The results as a Markdown table."""
    floor = statistics.median(w for w, _, _ in found["python -c pass"])
    cpu_floor = statistics.median(c for _, c, _ in found["python -c pass"])
    lines = [
        "| process | median wall | wall / `python -c pass` | median CPU | CPU / `python -c pass` "
        "| peak RSS | target (wall) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in found.items():
        wall = statistics.median(w for w, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        rss = max(r for _, _, r in runs) / 1024
        target = TARGETS.get(name)
        verdict = "—" if target is None else ("met" if wall <= target else "NOT met")
        shown = "—" if target is None else f"≤ {target} s"
        lines.append(
            f"| `{name}` | {wall:.3f} s | {wall / floor:.1f} | {cpu:.3f} s | {cpu / cpu_floor:.1f} "
            f"| {rss:.0f} MB | {shown} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure, print, and with --write-results write bench/RESULTS-startup.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--write-results", action="store_true", help="write the results file")
    args = parser.parse_args(argv)
    found = measure(args.rounds)
    text = table(found)
    print(text)
    if args.write_results:
        load = os.getloadavg()
        RESULTS.write_text(
            "# Start-up benchmark: results\n\n"
            "Written by `uv run python -m bench.startup_bench --write-results`; "
            "do not edit by hand.\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load[0]:.1f} at the end; median of {args.rounds} alternating "
            "rounds of whole processes (the demo network of examples/demo, SQLite state, "
            "the ledger key in the keyring).\n\n"
            f"{text}\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
