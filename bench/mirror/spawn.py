"""Run one command and report its own rusage: ``python -I -S spawn.py REPORT -- ARGV...``.

A forked child's ``ru_maxrss`` keeps its parent's high-water mark across ``exec`` (Linux
carries it over into the new program), so a command started straight from the benchmark
would report at least the benchmark's own RSS. Started from this small process instead, it
reports what it used itself. REPORT gets JSON: CLOCK_MONOTONIC at start and end (comparable
across processes), user and system CPU seconds, peak RSS in KiB and the exit code. Standard
library only, no site packages, so it stays small.
"""

import json
import os
import signal
import sys
import time


def main():
    report, argv = sys.argv[1], sys.argv[3:]
    start = time.monotonic()
    # Python ignores SIGPIPE and SIGXFSZ; the command gets the defaults, as from a shell
    pid = os.posix_spawnp(argv[0], argv, os.environ, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    _pid, status, usage = os.wait4(pid, 0)
    end = time.monotonic()
    code = os.waitstatus_to_exitcode(status)
    with open(report, "w") as out:
        json.dump(
            {
                "start": start,
                "end": end,
                "cpu": usage.ru_utime + usage.ru_stime,
                "maxrss_kib": usage.ru_maxrss,
                "code": code,
            },
            out,
        )
    sys.exit(code if 0 <= code < 256 else 1)


if __name__ == "__main__":
    main()
