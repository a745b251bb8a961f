"""Peak memory of streaming: records generated lazily, ``compiled.apply`` over a generator.

Each size runs in its own Python process (``python -m bench.memory N``), so one size's
peak cannot hide another's. The child reports the tracemalloc peak of the streaming loop
(Python allocations made after the policy compiled) and the process's peak RSS
(``VmHWM``: the interpreter, imports and all).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.data import iter_records
from bench.recipients import load_compiled

REPO = Path(__file__).resolve().parent.parent


def stream(count: int) -> dict[str, Any]:
    """Stream ``count`` records through policy (a); return what it measured."""
    compiled = load_compiled()
    tracemalloc.start()
    shared = 0
    for _record, decision, _projection in compiled.apply(iter_records(count)):
        shared += decision.share
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "records": count,
        "shared": shared,
        "tracemalloc_peak_mb": peak / 1e6,
        "maxrss_mb": peak_rss_kib() * 1024 / 1e6,
    }


def peak_rss_kib() -> int:
    """This process's peak resident set, in KiB.

    Linux's ``ru_maxrss`` survives ``exec``, so a child started by a big parent would
    report the parent's size; the ``VmHWM`` line of /proc/self/status does not."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Run one child process per size; return their reports in order."""
    reports = []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    for size in sizes:
        child = subprocess.run(
            [sys.executable, "-m", "bench.memory", str(size)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            raise RuntimeError(f"memory child for {size} records failed:\n{child.stderr}")
        reports.append(json.loads(child.stdout))
    return reports


def is_flat(reports: Sequence[dict[str, Any]], slack_mb: float = 1.0) -> bool:
    """True when the streaming peak grows by less than ``slack_mb`` from smallest to largest."""
    peaks = [float(r["tracemalloc_peak_mb"]) for r in reports]
    return max(peaks) - min(peaks) < slack_mb


if __name__ == "__main__":
    print(json.dumps(stream(int(sys.argv[1]))))
