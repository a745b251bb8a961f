"""CSV -> policy -> CSV mirror of N contacts: `connector run` against the tools a user might
pick instead, every one a whole process, every output checked identical before any timing.

    uv run python -m bench.mirror_bench [--records 1000000] [--rounds 3]
                                        [--contenders connector,stdlib,petl,csvkit,duckdb,singer]
                                        [--fanout-records 20000] [--fanout-jobs 50]
                                        [--state-ratio/--no-state-ratio] [--write-results]

Scenarios: a first run (empty state, no target file), an unchanged rerun, a rerun after 1
changed row and after 1% changed rows. Contenders: ``connector run`` (the CLI, state store,
id map, ledger and fsyncs included), a hand-written stdlib ``csv`` script (the floor), petl,
csvkit, DuckDB and a Singer pipeline (tap | meltano-map-transform | target-csv). Peers keep
no state: a rerun of theirs is a full run, so they are timed in the first-run scenario only.
Each process is measured by ``os.wait4``: wall time, CPU (user + system) and peak RSS (for a
pipeline, the sum of its processes' peaks: they run at the same time).

Also: start-up (``connector --help`` and an unchanged ``connector run`` against ``python -c
pass``), the time to hash the source (sha256, a whole process), the state's bytes per shared
record (SQLite ``dbstat``: id map and ledger with their indexes), PostgreSQL state against
SQLite state (first run), and N jobs over one source against one job (with the number of
times the source file is opened, counted by a Python audit hook in an untimed run).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.data import iter_records
from bench.recipients import POLICY_A, TEMPLATE, recipient
from bench.results import cpu_model

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "RESULTS-mirror.md"
PEERS = BENCH / ".peers"
SINGER = PEERS / "singer"
BIN = Path(sys.executable).parent
SPAWN = (sys.executable, "-I", "-S", str(BENCH / "mirror" / "spawn.py"))
JOB = "organizers-north"
SECRET_ENV = "MIRROR_BENCH_KEY_SECRET"
SECRET = "mirror-benchmark-target-key-secret"
PG_SERVER = os.environ.get(
    "CONNECTOR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
PG_DATABASE = "connector_mirror_bench"
COLUMNS = ("first_name", "last_name", "phone", "city")
SOURCE_HEADER = (
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "street_address",
    "postal_code",
    "city",
    "region",
    "country",
    "groups",
    "do_not_phone",
    "is_deceased",
    "contact_me",
    "local_organizing",
)
CONTENDERS = ("connector", "stdlib", "petl", "csvkit", "duckdb", "singer")
SCENARIOS = ("first run", "unchanged rerun", "1 row changed", "1% changed")
ENV = {
    SECRET_ENV: SECRET,
    "CONNECTOR_SECRET_NETWORK_LEDGER_KEY": "mirror-benchmark-ledger-key",
    "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
}

CONFIG = """\
version: 1
network:
  name: Mirror benchmark
  key_secret: {env: %(secret_env)s}
consent:
  purposes:
    contact_me: {description: May be contacted}
    local_organizing: {description: Local organizers may contact me}
connections:
  members:
    adapter: csv
    settings: {path: src/members.csv}
    mapping:
      consent.contact_me: contact_me
      consent.local_organizing: local_organizing
%(targets)s
jobs:
%(jobs)s
state: {url: "%(state)s"}
"""


class PeerMissing(RuntimeError):
    """A contender is not installed (bench/setup, scripts/bootstrap)."""


class OutputMismatch(AssertionError):
    """A contender wrote other rows than `connector run`."""


def log(message: str) -> None:
    """Progress on stderr (a full run takes a while)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the workload -----------------------------------------------------------------------------


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def source_rows(count: int, seed: int = 1) -> Iterator[list[str]]:
    """The bench contacts (bench/data.py) as CSV rows under SOURCE_HEADER."""
    for r in iter_records(count, seed):
        consent = r["consent"]
        local = consent.get("local_organizing")
        yield [
            r["id"],
            r["first_name"],
            r["last_name"],
            r["email"],
            r["phone"] or "",
            r["street_address"],
            r["postal_code"],
            r["city"],
            r["region"],
            r["country"],
            ";".join(r["groups"]),
            _yes(r["do_not_phone"]),
            _yes(r["is_deceased"]),
            _yes(consent["contact_me"]["granted"]),
            "" if local is None else _yes(local["granted"]),
        ]


def is_shared(row: Sequence[str]) -> bool:
    """Policy (a) on a source row (used only to pick which rows a change touches)."""
    return row[14] == "yes" and row[8] == "North" and row[12] != "yes"


def write_source(path: Path, count: int, change: str = "none", seed: int = 1) -> None:
    """Write the source; `change`: none, one (the first shared row's first name) or
    percent (the first name of every 100th row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    changed_one = False
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(SOURCE_HEADER)
        for n, row in enumerate(source_rows(count, seed)):
            if change == "percent" and n % 100 == 0:
                row[1] = row[1] + "x"
            elif change == "one" and not changed_one and is_shared(row):
                row[1], changed_one = row[1] + "x", True
            writer.writerow(row)


def target_block(name: str) -> str:
    return f"  {name}:\n    adapter: csv\n    settings: {{path: out/{name}.csv}}\n"


def write_network(root: Path, state: str, jobs: int = 1) -> list[str]:
    """connector.yaml with `jobs` jobs over the one source (job 0 runs policy (a)); returns
    the job names."""
    names, targets, job_lines = [], [], []
    policies = root / "policies"
    policies.mkdir(exist_ok=True)
    for index in range(jobs):
        if index == 0:
            name, policy = JOB, POLICY_A
        else:
            name, rule, when = recipient(index)
            policy = policies / f"{name}.yaml"
            policy.write_text(TEMPLATE.format(name=name, rule=rule, when=when), encoding="utf-8")
        names.append(name)
        targets.append(target_block(name))
        job_lines.append(f"  {name}: {{source: members, target: {name}, policy: {policy}}}")
    (root / "out").mkdir(exist_ok=True)
    (root / "connector.yaml").write_text(
        CONFIG
        % {
            "secret_env": SECRET_ENV,
            "targets": "".join(targets).rstrip("\n"),
            "jobs": "\n".join(job_lines),
            "state": state,
        },
        encoding="utf-8",
    )
    return names


# --- whole processes --------------------------------------------------------------------------


@dataclasses.dataclass
class Measure:
    """One whole-process run: wall seconds, CPU seconds (user + system), peak RSS (MB)."""

    wall: float
    cpu: float
    rss_mb: float


def run_processes(
    stages: Sequence[Sequence[str]],
    *,
    cwd: Path,
    stdout: Path | None = None,
    env: dict[str, str] | None = None,
) -> Measure:
    """Run `stages` as a pipeline (each one's stdout into the next one's stdin), the last
    one's stdout into `stdout`. Each stage is started by bench/mirror/spawn.py, which reaps it
    with os.wait4 and reports its own rusage (see there why not from here); wall time runs
    from the first stage's start to the last one's end (CLOCK_MONOTONIC)."""
    full_env = {**os.environ, **ENV, **(env or {})}
    # As installed (pip compiles bytecode): imports read cached bytecode instead of compiling
    # every module on every run, for every contender.
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        out: Any = stack.enter_context(stdout.open("wb")) if stdout else subprocess.DEVNULL
        errors = stack.enter_context(tempfile.TemporaryFile())
        reports = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spawn-")))
        previous: Any = subprocess.DEVNULL
        for index, argv in enumerate(stages):
            last = index == len(stages) - 1
            proc = subprocess.Popen(
                [*SPAWN, str(reports / f"{index}.json"), "--", *argv],
                cwd=cwd,
                env=full_env,
                stdin=previous,
                stdout=out if last else subprocess.PIPE,
                stderr=errors,
            )
            if previous is not subprocess.DEVNULL:
                previous.close()  # the next stage holds it now
            previous = subprocess.DEVNULL if last else proc.stdout
            procs.append(proc)
        codes = [proc.wait() for proc in procs]
        if any(codes):
            errors.seek(0)
            tail = errors.read().decode("utf-8", "replace")[-3000:]
            raise RuntimeError(f"{[s[0] for s in stages]} exited {codes}:\n{tail}")
        used = [json.loads((reports / f"{i}.json").read_text()) for i in range(len(stages))]
    wall = max(u["end"] for u in used) - min(u["start"] for u in used)
    cpu = sum(u["cpu"] for u in used)
    rss = sum(u["maxrss_kib"] for u in used) / 1024
    return Measure(wall, cpu, rss)


def connector_argv(*args: str) -> list[str]:
    return [str(BIN / "connector"), *args]


def _need(path: Path, how: str) -> str:
    if not path.exists():
        raise PeerMissing(f"{path} is missing: {how}")
    return str(path)


def peer_stages(name: str, source: Path, out: Path, work: Path) -> list[list[str]]:
    """The processes of peer `name` reading `source` and writing `out`."""
    py = sys.executable
    if name == "stdlib":
        return [
            [py, "-I", str(BENCH / "mirror" / "floor.py"), str(source), str(out), JOB, SECRET_ENV]
        ]
    if name in ("petl", "duckdb"):
        module = "petl" if name == "petl" else "duckdb"
        try:
            metadata.version(module)
        except metadata.PackageNotFoundError:
            raise PeerMissing(f"{module} is not installed: run scripts/bootstrap") from None
        return [[py, str(BENCH / "mirror" / f"{name}_job.py"), str(source), str(out)]]
    if name == "csvkit":
        how = "run scripts/bootstrap (csvkit is in the bench group)"
        grep, cut, sql = (_need(BIN / t, how) for t in ("csvgrep", "csvcut", "csvsql"))
        return [
            [grep, "-c", "region", "-r", "^North$", str(source)],
            [grep, "-c", "local_organizing", "-r", "^yes$"],
            [grep, "-c", "is_deceased", "-i", "-r", "^yes$"],
            [cut, "-c", "id,first_name,last_name,phone,city"],
            [sql, "-I", "--tables", "members", "--query", CSVSQL_QUERY],
        ]
    if name == "singer":
        how = "run bench/setup (the Singer pipeline has venvs of its own)"
        tap = _need(SINGER / "tap" / "bin" / "tap-csv-folder", how)
        mapper = _need(SINGER / "mapper" / "bin" / "meltano-map-transform", how)
        target = _need(SINGER / "target" / "bin" / "target-csv", how)
        configs = singer_configs(source, out, work)
        return [
            [tap, "--config", str(configs["tap"])],
            [mapper, "--config", str(configs["mapper"])],
            [target, "--config", str(configs["target"])],
        ]
    raise ValueError(name)


def _sql_guard(column: str) -> str:
    return (
        f"CASE WHEN substr({column}, 1, 1) IN ('=', '+', '-', '@', char(9), char(13)) "
        f"THEN '''' || {column} ELSE {column} END AS {column}"
    )


_SQL_ALNUM = "phone"
for _sign in (" ", "+", "-", "(", ")", ".", "/"):
    _SQL_ALNUM = f"replace({_SQL_ALNUM}, '{_sign}', '')"
# csvsql runs on SQLite: no regexp_replace, so `last4` drops the punctuation a phone number
# holds (space + - ( ) . /) instead of every non-alphanumeric character.
CSVSQL_QUERY = (
    f"SELECT id, {_sql_guard('first_name')}, {_sql_guard('last_name')}, "
    f"CASE WHEN length({_SQL_ALNUM}) > 4 THEN replace(hex(zeroblob(length({_SQL_ALNUM}) - 4)), "
    f"'00', '*') || substr({_SQL_ALNUM}, -4) END AS phone, {_sql_guard('city')} FROM members"
)

_ALNUM = "''.join(c for c in phone if c.isalnum())"
#: meltano-map-transform's expressions (simpleeval: no len(), so the stars are one per
#: character of the kept text but the last four).
SINGER_MAP = {
    "__filter__": "local_organizing == 'yes' and region == 'North' and is_deceased != 'yes'",
    "__key_properties__": ["id"],
    "__else__": "__NULL__",
    "id": "id",
    "first_name": "first_name",
    "last_name": "last_name",
    "city": "city",
    "phone": f"(''.join('*' for c in {_ALNUM}[:-4]) + {_ALNUM}[-4:]) "
    f"if phone and {_ALNUM}[4:] else None",
}


def singer_configs(source: Path, out: Path, work: Path) -> dict[str, Path]:
    """Config files of the Singer pipeline (the tap reads the folder holding `source`)."""
    folder = work / "singer"
    folder.mkdir(exist_ok=True)
    configs = {
        "tap": {
            "filesystem": "local",
            "path": str(source.parent),
            "read_mode": "merge",
            "stream_name": "members",
        },
        "mapper": {"stream_maps": {"members": SINGER_MAP}},
        "target": {"output_path": str(out.parent), "file_naming_scheme": out.name},
    }
    paths = {}
    for name, config in configs.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(config), encoding="utf-8")
    return paths


# --- what is compared -------------------------------------------------------------------------


def canonical(
    path: Path, keys: Callable[[str], str] | None = None
) -> collections.Counter[tuple[str, ...]]:
    """The rows of an output file as a multiset of (key, first_name, last_name, phone, city),
    by column name (column order and quoting do not count). `keys` maps a peer's source id
    to the target key `connector run` writes for it."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f)
        missing = {"id", *COLUMNS} - set(rows.fieldnames or ())
        if missing:
            raise OutputMismatch(f"{path.name}: no column {sorted(missing)}")
        return collections.Counter(
            (keys(r["id"]) if keys else r["id"], *(r[c] or "" for c in COLUMNS)) for r in rows
        )


def assert_identical(
    name: str,
    expected: collections.Counter[tuple[str, ...]],
    actual: collections.Counter[tuple[str, ...]],
) -> None:
    if actual == expected:
        return
    missing = list((expected - actual).elements())[:3]
    extra = list((actual - expected).elements())[:3]
    raise OutputMismatch(
        f"{name}: {sum(actual.values()):,} rows, expected {sum(expected.values()):,}; "
        f"missing {missing}, unexpected {extra}"
    )


def key_function() -> Callable[[str], str]:
    from connector_core.sync.keys import TargetKeys

    return TargetKeys(JOB, SECRET.encode())


# --- the runs ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Workspace:
    """A network folder: connector.yaml, src/members.csv, out/, state."""

    root: Path
    state: str

    @property
    def source(self) -> Path:
        return self.root / "src" / "members.csv"

    @property
    def target(self) -> Path:
        return self.root / "out" / f"{JOB}.csv"

    def reset(self) -> None:
        """Empty state, no target file (SQLite: delete; PostgreSQL: recreate the database)."""
        shutil.rmtree(self.root / "out", ignore_errors=True)
        (self.root / "out").mkdir()
        for leftover in self.root.glob("state.db*"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        if self.state.startswith("postgresql"):
            recreate_pg()

    def run(self, *args: str) -> Measure:
        return run_processes([connector_argv("run", *args)], cwd=self.root)


def recreate_pg() -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{PG_DATABASE}"'))
    admin.dispose()


def sqlite_workspace(root: Path, records: int, jobs: int = 1) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root, f"sqlite:///{root / 'state.db'}")
    write_network(root, ws.state, jobs)
    write_source(ws.source, records)
    return ws


def snapshot(ws: Workspace, to: Path) -> None:
    """Keep the state and target after a first run (SQLite), to start each rerun from."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    shutil.copy2(ws.root / "state.db", to / "state.db")
    shutil.copytree(ws.root / "out", to / "out")


def restore(ws: Workspace, frm: Path) -> None:
    ws.reset()
    shutil.copy2(frm / "state.db", ws.root / "state.db")
    shutil.rmtree(ws.root / "out")
    shutil.copytree(frm / "out", ws.root / "out")


def check_outputs(
    ws: Workspace, contenders: Sequence[str], work: Path, *, strict: bool
) -> tuple[collections.Counter[tuple[str, ...]], dict[str, str]]:
    """Run every contender once on the source; assert each output equals `connector run`'s.
    Returns our rows and, per peer, why it was not measured (when not `strict`)."""
    ws.reset()
    log("checking outputs: connector run")
    ws.run(JOB)
    ours = canonical(ws.target)
    keys = key_function()
    skipped: dict[str, str] = {}
    for name in contenders:
        if name == "connector":
            continue
        out = work / "peer-out" / f"{name}.csv"
        shutil.rmtree(out.parent, ignore_errors=True)
        out.parent.mkdir(parents=True)
        try:
            stages = peer_stages(name, ws.source, out, work)
        except PeerMissing as exc:
            if strict:
                raise
            skipped[name] = str(exc)
            continue
        log(f"checking outputs: {name}")
        run_processes(stages, cwd=work, stdout=out if name == "csvkit" else None)
        rows = canonical(out) if name == "stdlib" else canonical(out, keys)
        assert_identical(name, ours, rows)
    return ours, skipped


def time_first_runs(
    ws: Workspace, contenders: Sequence[str], work: Path, rounds: int
) -> dict[str, list[Measure]]:
    """First runs, contenders in a rotating order each round."""
    times: dict[str, list[Measure]] = {name: [] for name in contenders}
    for n in range(rounds):
        order = list(contenders[n % len(contenders) :]) + list(contenders[: n % len(contenders)])
        log(f"first runs, round {n + 1}: {', '.join(order)}")
        for name in order:
            if name == "connector":
                ws.reset()
                times[name].append(ws.run(JOB))
                continue
            out = work / "peer-out" / f"{name}.csv"
            shutil.rmtree(out.parent, ignore_errors=True)
            out.parent.mkdir(parents=True)
            stages = peer_stages(name, ws.source, out, work)
            times[name].append(
                run_processes(stages, cwd=work, stdout=out if name == "csvkit" else None)
            )
    return times


def hash_argv(path: Path) -> list[str]:
    code = "import hashlib,sys; hashlib.file_digest(open(sys.argv[1], 'rb'), 'sha256').hexdigest()"
    return [sys.executable, "-I", "-c", code, str(path)]


#: What any rerun must do at least, as a whole process: start Python, import what opening
#: the state store and validating connector.yaml take (SQLAlchemy, pydantic, click, PyYAML),
#: and hash the source. The 1-row target (2x the sha256 process) lies below it when this
#: floor is over 2x.
FLOOR_CODE = (
    "import hashlib, sys, click, pydantic, sqlalchemy, yaml; "
    "hashlib.file_digest(open(sys.argv[1], 'rb'), 'sha256').hexdigest()"
)
RERUN_FLOOR = "floor: python + imports of the store and config + sha256"


def time_reruns(ws: Workspace, work: Path, rounds: int, records: int) -> dict[str, list[Measure]]:
    """Reruns from the state of a first run: unchanged, 1 row changed, 1% changed, each from
    a copy of that state, synced to disk before the run starts; the sha256 of the source (a
    whole process) and `python -c pass` alternate with them."""
    ws.reset()
    ws.run(JOB)
    base = work / "after-first-run"
    snapshot(ws, base)
    sources = {"unchanged rerun": "none", "1 row changed": "one", "1% changed": "percent"}
    files = {}
    for scenario, change in sources.items():
        files[scenario] = work / "sources" / change / "members.csv"
        write_source(files[scenario], records, change)
    times: dict[str, list[Measure]] = {
        **{s: [] for s in sources},
        "sha256 of the source": [],
        RERUN_FLOOR: [],
        "python -c pass": [],
        "connector --help": [],
    }
    for n in range(rounds):
        log(f"reruns, round {n + 1}")
        for scenario in sources:
            restore(ws, base)
            shutil.copy2(files[scenario], ws.source)
            # The copies on disk before the run starts: else its first commit (fsync of
            # state.db) writes back the whole copied store, 0.1-0.3 s that are the bench's
            # set-up, not the run's work (a real rerun finds a store the last run synced).
            os.sync()
            times[scenario].append(ws.run(JOB))
        times["sha256 of the source"].append(run_processes([hash_argv(ws.source)], cwd=work))
        floor = [sys.executable, "-c", FLOOR_CODE, str(ws.source)]
        times[RERUN_FLOOR].append(run_processes([floor], cwd=work))
        times["python -c pass"].append(run_processes([[sys.executable, "-c", "pass"]], cwd=work))
        times["connector --help"].append(run_processes([connector_argv("--help")], cwd=work))
    shutil.copy2(files["unchanged rerun"], ws.source)
    return times


def state_bytes(db: Path) -> dict[str, int]:
    """Bytes of each table of a SQLite state store with its indexes (dbstat)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master"))
        sizes: dict[str, int] = collections.Counter()
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            sizes[owner.get(name, name)] += size
        return dict(sizes)
    finally:
        conn.close()


def time_state_kinds(ws: Workspace, rounds: int) -> dict[str, list[Measure]] | str:
    """First runs with PostgreSQL state against SQLite state, alternating."""
    pg_url = f"{PG_SERVER}/{PG_DATABASE}"
    try:
        recreate_pg()
    except Exception as exc:  # no server: say so in the results
        return f"PostgreSQL at {PG_SERVER} unavailable: {type(exc).__name__}: {exc}"[:300]
    sqlite_url = ws.state
    times: dict[str, list[Measure]] = {"sqlite": [], "postgresql": []}
    try:
        for n in range(rounds):
            log(f"PostgreSQL and SQLite state, round {n + 1}")
            for kind in ("sqlite", "postgresql") if n % 2 == 0 else ("postgresql", "sqlite"):
                ws.state = pg_url if kind == "postgresql" else sqlite_url
                write_network(ws.root, ws.state)
                ws.reset()
                times[kind].append(ws.run(JOB))
    finally:
        ws.state = sqlite_url
        write_network(ws.root, ws.state)
    return times


AUDIT = """\
import os, sys
_source = os.path.realpath(sys.argv.pop(1))
_count = [0]
def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        try:
            if os.path.realpath(os.fsdecode(args[0])) == _source:
                _count[0] += 1
        except (TypeError, ValueError):
            pass
sys.addaudithook(_hook)
import atexit
atexit.register(lambda: open(os.environ["MIRROR_BENCH_OPENS"], "w").write(str(_count[0])))
from connector_core.cli import main
sys.argv[0] = "connector"
main()
"""


def count_source_opens(ws: Workspace, *args: str) -> int:
    """How many times a first run opens the source file (Python's `open` audit event: every
    open(), os.open() and io.open() of the interpreter)."""
    ws.reset()
    counter = ws.root / "opens.txt"
    run_processes(
        [[sys.executable, "-c", AUDIT, str(ws.source), "run", *args]],
        cwd=ws.root,
        env={"MIRROR_BENCH_OPENS": str(counter)},
    )
    return int(counter.read_text())


def time_fanout(work: Path, records: int, jobs: int, rounds: int) -> dict[str, Any]:
    """`connector run --all` of `jobs` jobs over one source against one job, first runs."""
    ws = sqlite_workspace(work / "fanout", records, jobs)
    times: dict[str, list[Measure]] = {"one job": [], f"{jobs} jobs (run --all)": []}
    for n in range(rounds):
        log(f"fan-out, round {n + 1}")
        for variant in list(times) if n % 2 == 0 else list(times)[::-1]:
            ws.reset()
            times[variant].append(ws.run(JOB) if variant == "one job" else ws.run("--all"))
    return {
        "records": records,
        "jobs": jobs,
        "times": times,
        "opens_one": count_source_opens(ws, JOB),
        "opens_all": count_source_opens(ws, "--all"),
    }


# --- the report -------------------------------------------------------------------------------


def summary(ms: list[Measure]) -> dict[str, float]:
    return {
        "wall_median": statistics.median(m.wall for m in ms),
        "wall_best": min(m.wall for m in ms),
        "cpu_median": statistics.median(m.cpu for m in ms),
        "rss_max_mb": max(m.rss_mb for m in ms),
        "runs": len(ms),
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("petl", "csvkit", "duckdb"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    for part in ("tap", "mapper", "target"):
        found = sorted((SINGER / part).glob("lib/python*/site-packages/*.dist-info"))
        names = [d.name.removesuffix(".dist-info") for d in found]
        pick = {
            "tap": "tap_csv_folder",
            "mapper": "meltano_map_transform",
            "target": "meltanolabs_target_csv",
        }[part]
        match = [n for n in names if n.lower().startswith(pick)]
        sdk = [n for n in names if n.lower().startswith("singer_sdk")]
        out[f"singer {part}"] = " + ".join(match + sdk) if match else None
    return out


def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "Python": platform.python_version(),
        "OS": f"{platform.system()} {platform.release()}",
    }


TARGETS = {
    "first_vs_floor": ("first run / stdlib floor", "≤ 3", lambda v: v <= 3),
    "first_vs_petl": ("first run / petl", "< 1", lambda v: v < 1),
    "first_vs_csvkit": ("first run / csvkit", "< 1", lambda v: v < 1),
    "first_rss_mb": ("first run peak RSS (MB)", "≤ 300", lambda v: v <= 300),
    "one_row_vs_hash": ("1-row rerun / sha256 of the source", "≤ 2", lambda v: v <= 2),
    "unchanged_s": ("unchanged rerun (s, whole process)", "≤ 0.5", lambda v: v <= 0.5),
    "fanout_vs_one": ("N jobs over one source / one job", "≤ 3", lambda v: v <= 3),
    "fanout_opens": (
        "source opens by `run --all` / by one job's run (read once)",
        "≤ 1",
        lambda v: v <= 1,
    ),
    "pg_vs_sqlite": ("PostgreSQL state / SQLite state (first run)", "≤ 1.5", lambda v: v <= 1.5),
    "help_s": ("`connector --help` (s, whole process)", "≤ 0.25", lambda v: v <= 0.25),
    "state_b_per_record": ("id map + ledger bytes per shared record", "≤ 150", lambda v: v <= 150),
}


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    first = results["first"]
    med = {name: s["wall_median"] for name, s in first.items()}
    reruns = results["reruns"]
    out: dict[str, float | None] = dict.fromkeys(TARGETS)
    if "connector" in med:
        for peer, key in (
            ("stdlib", "first_vs_floor"),
            ("petl", "first_vs_petl"),
            ("csvkit", "first_vs_csvkit"),
        ):
            if peer in med:
                out[key] = med["connector"] / med[peer]
        out["first_rss_mb"] = first["connector"]["rss_max_mb"]
    if reruns:
        out["one_row_vs_hash"] = (
            reruns["1 row changed"]["wall_median"] / reruns["sha256 of the source"]["wall_median"]
        )
        out["unchanged_s"] = reruns["unchanged rerun"]["wall_median"]
        out["help_s"] = reruns["connector --help"]["wall_median"]
    fan = results.get("fanout")
    if fan:
        names = list(fan["summary"])
        out["fanout_vs_one"] = (
            fan["summary"][names[1]]["wall_median"] / fan["summary"][names[0]]["wall_median"]
        )
        out["fanout_opens"] = fan["opens_all"] / fan["opens_one"]
    pg = results.get("state_kinds")
    if isinstance(pg, dict):
        out["pg_vs_sqlite"] = pg["postgresql"]["wall_median"] / pg["sqlite"]["wall_median"]
    if results.get("state_bytes") and results["shared"]:
        sizes = results["state_bytes"]
        out["state_b_per_record"] = (sizes.get("id_map", 0) + sizes.get("ledger", 0)) / results[
            "shared"
        ]
    return out


def _row(name: str, s: dict[str, float], base: float | None, cpu_base: float | None) -> str:
    ratio = "—" if base is None else f"{s['wall_median'] / base:.2f}"
    cpu_ratio = "—" if not cpu_base else f"{s['cpu_median'] / cpu_base:.2f}"
    return (
        f"| {name} | {s['wall_median']:.2f} | {s['wall_best']:.2f} | {ratio} "
        f"| {s['cpu_median']:.2f} | {cpu_ratio} | {s['rss_max_mb']:.0f} | {s['runs']} |"
    )


DESCRIPTIONS = {
    "connector": (
        "`connector run organizers-north` (SQLite state: id map, ledger, intent log, fsyncs)"
    ),
    "stdlib": "hand-written stdlib `csv` script, same HMAC key (bench/mirror/floor.py)",
    "petl": "petl `fromcsv | select | cut | convert | tocsv` (bench/mirror/petl_job.py)",
    "csvkit": "3 `csvgrep` \\| `csvcut` \\| `csvsql -I` (last4 and guard in SQL)",
    "duckdb": "DuckDB `COPY (SELECT …) TO`, all columns as text (bench/mirror/duckdb_job.py)",
    "singer": "`tap-csv-folder` \\| `meltano-map-transform` \\| `target-csv` (MeltanoLabs)",
}


def render(results: dict[str, Any]) -> str:
    r = ratios(results)
    cfg = results["config"]
    lines = [
        "# Mirror benchmark: CSV → policy → CSV, results",
        "",
        "Written by `uv run python -m bench.mirror_bench --write-results`; do not edit by hand.",
        f"Command: `{results['command']}`",
        "",
        *([f"> {results['note']}", ""] if results.get("note") else []),
        "## Machine",
        "",
        "|  |  |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in results["machine"].items()),
        *(f"| {k} | {v or 'not installed'} |" for k, v in results["versions"].items()),
        "",
        "## The issue's targets (ratios against baselines measured in this run)",
        "",
        "| target | measured | target | verdict |",
        "|---|---|---|---|",
    ]
    for key, (label, target, check) in TARGETS.items():
        value = r.get(key)
        shown = "not measured" if value is None else f"{value:,.2f}"
        verdict = "not measured" if value is None else "met" if check(value) else "**NOT met**"
        lines.append(f"| {label} | {shown} | {target} | {verdict} |")
    first = results["first"]
    base = first.get("stdlib", {}).get("wall_median")
    cpu_base = first.get("stdlib", {}).get("cpu_median")
    lines += [
        "",
        f"## First run: {cfg['records']:,} contacts, {results['shared']:,} shared "
        f"({cfg['rounds']} rounds, contenders rotating)",
        "",
        "| contender | wall median (s) | wall best (s) | / stdlib floor | CPU median (s) "
        "| CPU ratio | peak RSS (MB) | runs |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(name, s, base, cpu_base) for name, s in first.items()),
        "",
        *(f"- {name}: {DESCRIPTIONS[name]}" for name in first),
        *(f"- {name}: **not measured**: {why}" for name, why in results["skipped"].items()),
    ]
    if results["reruns"]:
        hashed = results["reruns"]["sha256 of the source"]["wall_median"]
        hashed_cpu = results["reruns"]["sha256 of the source"]["cpu_median"]
        lines += [
            "",
            "## Reruns of `connector run` and start-up (whole processes)",
            "",
            "Peers keep no state: their rerun is a full run (the first-run table).",
            "",
            "| run | wall median (s) | wall best (s) | / sha256 of the source | CPU median (s) "
            "| CPU ratio | peak RSS (MB) | runs |",
            "|---|---|---|---|---|---|---|---|",
            *(_row(name, s, hashed, hashed_cpu) for name, s in results["reruns"].items()),
        ]
    if results.get("state_bytes"):
        sizes = results["state_bytes"]
        shared = results["shared"]
        lines += [
            "",
            f"## SQLite state after the first run ({shared:,} shared records)",
            "",
            "| table (with its indexes) | bytes | bytes per shared record |",
            "|---|---|---|",
            *(
                f"| {name} | {size:,} | {size / shared:,.0f} |"
                for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])
            ),
        ]
    pg = results.get("state_kinds")
    if pg:
        lines += [
            "",
            f"## PostgreSQL state against SQLite state (first run, {cfg['records']:,})",
            "",
        ]
        if isinstance(pg, str):
            lines.append(f"Not measured: {pg}")
        else:
            lines += [
                "| state store | wall median (s) | wall best (s) | / SQLite | CPU median (s) "
                "| CPU ratio | peak RSS (MB) | runs |",
                "|---|---|---|---|---|---|---|---|",
                *(
                    _row(k, s, pg["sqlite"]["wall_median"], pg["sqlite"]["cpu_median"])
                    for k, s in pg.items()
                ),
            ]
    fan = results.get("fanout")
    if fan:
        names = list(fan["summary"])
        one = fan["summary"][names[0]]["wall_median"]
        one_cpu = fan["summary"][names[0]]["cpu_median"]
        lines += [
            "",
            f"## {fan['jobs']} jobs over one source ({fan['records']:,} contacts, first runs)",
            "",
            "| run | wall median (s) | wall best (s) | / one job | CPU median (s) | CPU ratio "
            "| peak RSS (MB) | runs |",
            "|---|---|---|---|---|---|---|---|",
            *(_row(k, s, one, one_cpu) for k, s in fan["summary"].items()),
            "",
            f"The source file was opened {fan['opens_one']} time(s) by one job's run and "
            f"{fan['opens_all']} time(s) by `run --all` (Python's `open` audit event, in an "
            "untimed run of each).",
        ]
    lines += ["", "## What is compared, and how", "", METHOD.rstrip("\n")]
    return "\n".join(lines) + "\n"


METHOD = """\
- The source: the bench contacts (bench/data.py, seed 1) as a CSV with canonical column names
  and yes/no/empty consent cells; the job: policy (a) (bench/policies/organizers-north.yaml):
  consented to local organizing, in the North, not deceased; first name, last name, city and
  `last4` of the phone.
- Before anything is timed every contender runs once on the same source and its output is
  asserted equal to `connector run`'s: the same rows as a multiset of (key, first_name,
  last_name, phone, city), read back with `csv.DictReader` by column name. The key is the
  target key `connector run` writes (HMAC-SHA256 of job and source id under the network's key
  secret, UUID-shaped): the stdlib script computes it itself; the peers write the source id,
  which the check maps to that key. Column order, quoting, row order and line endings are not
  compared.
- Not compared, because the peers do not do it: the id map, the ledger, the intent log and
  the cursor `connector run` keeps; take-back of records that leave the policy on a later
  run; the full formula guard (the peers guard ASCII `= + - @`, tab and carriage return at
  the start of a cell; ours also Unicode look-alikes and signs after invisible characters; the
  data holds none, so the outputs are equal); our consent and yes/no parsing of every
  spelling (the data uses `yes`, `no` and empty only).
- Every contender is timed as whole processes (interpreter start-up and imports included),
  each started and reaped (`os.wait4`) by a small spawner (bench/mirror/spawn.py, so that
  no process inherits the benchmark's own RSS high-water mark): wall time, CPU (user +
  system), peak RSS (a pipeline: the sum of its processes' peaks). Rounds rotate the
  contenders' order. Ratios are of medians; the verdicts use wall time, as the issue states
  its targets. On a shared machine wall time also counts waiting for the CPU, so the CPU
  ratio beside each wall ratio says how much of a gap is the machine's load.
  The PostgreSQL server's own CPU is not in any CPU figure (it is not our child).
- Reruns start from a copy of the state and target a first run left; the source is replaced
  by one with no change, the first name of the first shared row changed, or the first name of
  every 100th row changed. The hash baseline is a whole Python process computing the
  file's sha256 (`hashlib.file_digest`).
"""


def run_bench(
    records: int,
    rounds: int,
    contenders: Sequence[str],
    *,
    strict: bool,
    reruns: bool = True,
    state_ratio: bool = True,
    fanout_records: int = 0,
    fanout_jobs: int = 50,
    work: Path | None = None,
) -> dict[str, Any]:
    own = work is None
    work = work or Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    try:
        ws = sqlite_workspace(work / "net", records)
        ours, skipped = check_outputs(ws, contenders, work, strict=strict)
        shared = sum(ours.values())
        sizes = state_bytes(ws.root / "state.db")
        measured = [c for c in contenders if c not in skipped]
        first = time_first_runs(ws, measured, work, rounds) if rounds else {}
        results: dict[str, Any] = {
            "config": {"records": records, "rounds": rounds},
            "shared": shared,
            "skipped": skipped,
            "first": {k: summary(v) for k, v in first.items()},
            "state_bytes": sizes,
            "reruns": {},
        }
        if reruns and rounds and "connector" in contenders:
            results["reruns"] = {
                k: summary(v) for k, v in time_reruns(ws, work, rounds, records).items()
            }
        if state_ratio and rounds:
            kinds = time_state_kinds(ws, rounds)
            results["state_kinds"] = (
                kinds if isinstance(kinds, str) else {k: summary(v) for k, v in kinds.items()}
            )
        if fanout_records and rounds:
            fan = time_fanout(work, fanout_records, fanout_jobs, rounds)
            fan["summary"] = {k: summary(v) for k, v in fan.pop("times").items()}
            results["fanout"] = fan
        return results
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--fanout-records", type=int, default=20_000, help="0 skips")
    parser.add_argument("--fanout-jobs", type=int, default=50)
    parser.add_argument("--no-state-ratio", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-reruns", action="store_true")
    parser.add_argument(
        "--strict-peers", action="store_true", default=os.environ.get("CI") == "true"
    )
    parser.add_argument("--note", default="", help="a line shown at the top of the results")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument(
        "--from-json", type=Path, help="render the results a --json run printed; run nothing"
    )
    args = parser.parse_args()
    if args.from_json:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        if args.note:  # a note written once the figures are known
            results["note"] = args.note
        page = render(results)
        print(page)
        if args.write_results:
            RESULTS.write_text(page, encoding="utf-8")
        return
    results = run_bench(
        args.records,
        args.rounds,
        [c for c in args.contenders.split(",") if c],
        strict=args.strict_peers,
        reruns=not args.no_reruns,
        state_ratio=not args.no_state_ratio,
        fanout_records=args.fanout_records,
        fanout_jobs=args.fanout_jobs,
    )
    results["machine"] = machine()
    results["versions"] = versions()
    results["note"] = args.note
    results["command"] = "uv run python -m bench.mirror_bench " + " ".join(sys.argv[1:])
    page = render(results)
    print(json.dumps(results, indent=2) if args.json else page)
    if args.write_results:
        RESULTS.write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
