"""The users' scale: one national source of N people, P partner jobs from a template.

A national CSV of N people (1,000,000 at full size), each living in one of P areas, and a
partner registry of P partners (15,000 at full size), one per area, expanded by one job
template (``partners:`` in connector.yaml) whose policy takes the partner's area
(``{partner: region}``) and narrows the network floor; each partner's target is a CSV file
of its own. Against it, measured in the same run, the **baseline**: ONE job sharing the same
records (the same consent, fields and floor, every area) into one CSV target. Both are
``connector`` processes started as a user starts them (``connector run --all`` for the
network, ``connector run everyone`` for the baseline), each measured by ``os.wait4`` (wall,
CPU, peak RSS), with a fresh state store per mode and store kind: PostgreSQL (a fresh
database per run, at ``CONNECTOR_TEST_POSTGRES`` or the machine's 127.0.0.1:5432) and
SQLite.

Each mode does a first run (empty state, no target files) and an incremental run after 1%
of the people changed (half moved city, half withdrew their local organizing consent). It
counts how many times the source was read (calls of the CSV adapter's ``read`` on the
national connection) and opened (Python's ``open`` audit event on the file) in the process,
the state database's size, and it checks the targets before anything counts: every
partner's file holds exactly the consented, living people of its area with only the
allowed columns, and the partners' files together hold exactly the baseline's rows.

    uv run python -m bench.scale_bench --people 100000 --partners 1500 [--stores postgresql,sqlite]
                                       [--workers 1,2,4 [--no-in-process]]
                                       [--write-results] [--json] [--note TEXT]

``--write-results`` writes bench/RESULTS-scale.md. ``--workers 1,2,4`` also runs the network
on N `connector worker -c 1` processes (:func:`network_run`; PostgreSQL state only, broker
a queue of its own on the machine's Redis, database 12 or ``SCALE_BENCH_BROKER``): the
workers are started and ready first, then `connector run --all --queue` is measured from
its start to the end of the last job's run (the state store's runs), with the CPU of that
process and of every worker and pool process between ready and drained (from /proc), the
peak RSS of each worker (the larger of its main and pool process), and the source's reads
counted in every process. The speed-up is one worker's wall over N workers'.
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
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.mirror_bench import PG_SERVER, Measure, run_processes
from bench.results import cpu_model

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "RESULTS-scale.md"
PG_DATABASE = "connector_scale_bench"
TEMPLATE = "local"
BASELINE = "everyone"
FIELDS = ("first_name", "last_name", "email", "city")
HEADER = (
    "Person ID", "First Name", "Last Name", "Email", "Phone", "Street", "City", "Area",
    "Deceased", "Contact OK", "Local organizing OK",
)  # fmt: skip
FIRST = ("Ana", "Bruno", "Chloé", "Dmitri", "Efua", "Farid", "Grace", "Hiro", "Ines", "Jonas")
LAST = ("Diallo", "Okafor", "Nowak", "García", "Smith", "Chen", "Haddad", "Evans", "Kaur", "Berg")
CITIES = ("Leeds", "York", "Hull", "Durham", "Bradford", "Sheffield", "Newcastle", "Carlisle")
#: Targets of issue 15 (in the benchmark, never in timed tests)
TARGET_FIRST = 5.0  # P jobs / one job sharing the same records
TARGET_INCREMENTAL = 0.10  # incremental run after 1% changed / first run
ENV = {
    "SCALE_BENCH_KEY_SECRET": "scale-benchmark-target-key-secret",
    "CONNECTOR_SECRET_NETWORK_LEDGER_KEY": "scale-benchmark-ledger-key",
    "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
}
COUNTS = "SCALE_BENCH_COUNTS"
#: The workers' broker: a database number of its own on the machine's Redis, a queue per mode
BROKER = os.environ.get("SCALE_BENCH_BROKER", "redis://127.0.0.1:6379/12")
TARGET_WORKERS = 1.7  # 2 worker processes / 1 (wall)

CONFIG = """\
version: 1
network:
  name: Scale benchmark
  floor: network-floor.yaml
  key_secret: {env: SCALE_BENCH_KEY_SECRET}
consent:
  purposes:
    contact_me: {description: May be contacted by the group that collected their details.}
    local_organizing: {description: May be contacted by local organizers near them.}
state: {url: "%(state)s"}
connections:
  national:
    adapter: csv
    settings: {path: people.csv, key_column: Person ID}
    mapping:
      first_name: First Name
      last_name: Last Name
      email: Email
      phone: Phone
      street_address: Street
      city: City
      region: Area
      is_deceased: Deceased
      consent.contact_me: Contact OK
      consent.local_organizing: Local organizing OK
%(rest)s"""
NETWORK = """\
jobs: {}
partners:
  local:  # TEMPLATE
    registry: partners.csv
    source: national
    policy: partner-local.yaml
    target:
      adapter: csv
      settings: {path: {partner: target}}
"""
QUEUE = """\
queue: {broker: "%(broker)s", queue: %(queue)s%(group_limit)s}
"""
ONE_JOB = """\
  everyone-out:  # BASELINE
    adapter: csv
    settings: {path: out/everyone.csv}
jobs:
  everyone: {source: national, target: everyone-out, policy: everyone.yaml}
"""
POLICY = """\
policy: %(name)s
description: Local organizers see the consented people of %(whom)s.
require_consent: [local_organizing]
rules:
  - allow: people %(whom)s
%(when)sfields:
  first_name: show
  last_name: show
  email: show
  city: show
"""
PARTNER_POLICY = POLICY % {
    "name": "partner-local",
    "whom": "in the partner's area",
    "when": "    when: {region: {partner: region}}\n",
}
BASELINE_POLICY = POLICY % {"name": BASELINE, "whom": "in every area", "when": ""}

#: Run in each measured process (the one of `connector run --all`, or each worker and its pool
#: processes): counts the source's reads and opens and the statements sent to the state
#: store, one character each ("r", "o", "s") appended to a file per process in the folder
#: $SCALE_BENCH_COUNTS (a worker's pool processes end without atexit handlers), then
#: `connector ...` as its console script runs it.
CHILD = """\
import os, sys
_source = os.path.realpath(sys.argv.pop(1))
_name = os.path.basename(_source).encode()
_folder = os.environ["SCALE_BENCH_COUNTS"]
def _note(what):
    fd = os.open(os.path.join(_folder, str(os.getpid())), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, what)
    os.close(fd)
def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        # the name first: a realpath of every file opened (policies...) weighs on the jobs
        try:
            name = os.fsencode(args[0])
            if name.endswith(_name) and os.path.realpath(os.fsdecode(name)) == _source:
                _note(b"o")
        except (TypeError, ValueError):
            pass
sys.addaudithook(_hook)
from connector_csv import CsvAdapter
_read = CsvAdapter.read
def _counted(self, **kwargs):
    if self.connection == "national":
        _note(b"r")
    return _read(self, **kwargs)
CsvAdapter.read = _counted
import sqlalchemy as _sa
_sa.event.listen(_sa.engine.Engine, "before_cursor_execute", lambda *_: _note(b"s"))
from connector_core.cli import console
sys.argv[0] = "connector"
console()
"""


def tally(folder: Path) -> dict[str, int]:
    """The reads and opens of the source, and the statements sent to the state store, that
    the processes noted in `folder`."""
    text = "".join(p.read_text(encoding="ascii") for p in folder.iterdir())
    return {"reads": text.count("r"), "opens": text.count("o"), "statements": text.count("s")}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def area(index: int) -> str:
    return f"area-{index:05d}"


def partner(index: int) -> str:
    return f"p{index:05d}"


def people(count: int, areas: int, changed: float = 0.0) -> Iterator[list[str]]:
    """The national CSV's rows, the same every time; `changed` of them (a fixed choice)
    moved city (half) or withdrew their local organizing consent (half)."""
    rng = random.Random(15)
    change = random.Random(16)
    for n in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        row = [
            f"P{n:07d}", first, last, f"{first.lower()}.{last.lower()}{n}@example.org",
            f"+44 113 496 {rng.randrange(10000):04d}", f"{rng.randrange(1, 200)} Mill Lane",
            rng.choice(CITIES), area(rng.randrange(areas)),
            "yes" if rng.random() < 0.02 else "no",
            "yes" if rng.random() < 0.9 else "no",
            "yes" if rng.random() < 0.6 else rng.choice(("no", "")),
        ]  # fmt: skip
        if changed and change.random() < changed:
            if change.random() < 0.5:
                row[6] = "Elsewhere"
            else:
                row[10] = "no"
        yield row


def write_people(path: Path, count: int, areas: int, changed: float = 0.0) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        out.writerows(people(count, areas, changed))


def write_registry(path: Path, partners: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["name", "region", "target", "contact"])
        for i in range(partners):
            name = partner(i)
            out.writerow([name, area(i), f"out/{name}.csv", f"organizers@{name}.example.org"])


class Workspace:
    """One mode's network folder on one state store kind: ``baseline`` (one job),
    ``network`` (the partner jobs in one process) or ``workers-N`` (the partner jobs on N
    `connector worker` processes, PostgreSQL only)."""

    def __init__(
        self, root: Path, mode: str, store: str, partners: int, group_limit: int | None = None
    ) -> None:
        self.root, self.mode, self.store, self.partners = root, mode, store, partners
        self.workers = int(mode.split("-")[1]) if mode.startswith("workers-") else 0
        self.queue = f"sb-q-{os.getpid()}-{mode}"
        if self.workers and store != "postgresql":
            raise ValueError("worker processes share a PostgreSQL state store, not SQLite")
        root.mkdir(parents=True)
        if store == "postgresql":
            self.database: str | None = f"{PG_DATABASE}_{mode.replace('-', '')}_{os.getpid()}"
            self.url = f"{PG_SERVER}/{self.database}"
        else:
            self.database = None
            self.url = f"sqlite:///{root / 'state.db'}"
        shutil.copy(ROOT / "policies" / "network-floor.yaml", root / "network-floor.yaml")
        if mode != "baseline":
            rest = NETWORK
            if self.workers:
                rest += QUEUE % {
                    "broker": BROKER,
                    "queue": self.queue,
                    "group_limit": f", group_limit: {group_limit}" if group_limit else "",
                }
            (root / "partner-local.yaml").write_text(PARTNER_POLICY, encoding="utf-8")
            write_registry(root / "partners.csv", partners)
        else:
            rest = ONE_JOB
            (root / f"{BASELINE}.yaml").write_text(BASELINE_POLICY, encoding="utf-8")
        config = CONFIG % {"state": self.url, "rest": rest}
        (root / "connector.yaml").write_text(config, encoding="utf-8")
        (root / "out").mkdir()
        if self.database is not None:
            recreate_pg(self.database)

    @property
    def source(self) -> Path:
        return self.root / "people.csv"

    @property
    def is_network(self) -> bool:
        return self.mode != "baseline"

    def child(self, *args: str) -> list[str]:
        """The command line of a measured `connector ARGS...` process."""
        return [sys.executable, "-c", CHILD, str(self.source), *args]

    def run(self) -> dict[str, Any]:
        """One run of the mode, measured, with the source's reads and opens counted."""
        counts = self.root / "counts"
        shutil.rmtree(counts, ignore_errors=True)
        counts.mkdir()
        args = ["run", "--all"] if self.is_network else ["run", BASELINE]
        argv = self.child("--quiet", *args)
        if self.is_network:
            measure = network_run(self, argv, counts)
        else:
            measure = run_processes([argv], cwd=self.root, env={**ENV, COUNTS: str(counts)})
        found = tally(counts)
        result: dict[str, Any] = {
            "seconds": measure.wall,
            "cpu": measure.cpu,
            "rss_mb": measure.rss_mb,
            "reads": found["reads"],
            "opens": found["opens"],
            "statements": found["statements"],
            "state_bytes": self.state_bytes(),
        }
        if isinstance(measure, WorkersMeasure):
            result["worker_rss_mb"] = measure.worker_rss_mb
            result["tasks"] = measure.tasks
            result["retries"] = measure.retries
        return result

    def state_bytes(self) -> int:
        if self.database is None:
            return sum(p.stat().st_size for p in self.root.glob("state.db*") if p.is_file())
        import sqlalchemy as sa

        engine = sa.create_engine(f"{PG_SERVER}/{self.database}", poolclass=sa.NullPool)
        with engine.connect() as conn:
            size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
        engine.dispose()
        return int(size or 0)

    def last_finished(self) -> float | None:
        """When the last run ended (epoch seconds), from the state store's runs."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url, poolclass=sa.NullPool)
        with engine.connect() as conn:
            last = conn.execute(sa.text("SELECT max(finished_at) FROM runs")).scalar()
        engine.dispose()
        if last is None:
            return None
        if isinstance(last, str):
            last = datetime.fromisoformat(last)
        return float((last if last.tzinfo else last.replace(tzinfo=UTC)).timestamp())

    def drop(self) -> None:
        if self.database is not None:
            recreate_pg(self.database, create=False)


@dataclasses.dataclass
class WorkersMeasure(Measure):
    """A run on worker processes: wall from `run --all --queue`'s start to the last job's
    end; CPU of that process plus what the workers (and their pool processes) used between
    ready and drained; peak RSS of each worker (the larger of its main and pool process)."""

    worker_rss_mb: list[float] = dataclasses.field(default_factory=list)
    tasks: int = 0
    retries: int = 0  # tasks retried (a job that could not run: e.g. too many connections)


def network_run(ws: Workspace, argv: list[str], counts: Path) -> Measure:
    """The network's run: `connector run --all` in one process; or, for ``workers-N``,
    N `connector worker` processes started (and ready), `connector run --all --queue`,
    a wait until the queue is drained, and the workers stopped by their process ids."""
    env = {**ENV, COUNTS: str(counts)}
    if not ws.workers:
        return run_processes([argv], cwd=ws.root, env=env)
    from connector_core.sync import queue

    settings = queue.QueueSettings(url=BROKER, shown=BROKER, queue=ws.queue)
    queue.purge(settings)
    workers = [BenchWorker(ws, n, env) for n in range(ws.workers)]
    try:
        for worker in workers:
            worker.ready()
        used = [worker.cpu() for worker in workers]
        start = time.time()
        enqueue = run_processes([[*argv, "--queue"]], cwd=ws.root, env=env)
        if not queue.wait_drained(settings, timeout=24 * 3600, poll=0.2):
            raise RuntimeError("the queue did not drain")
        drained = time.time()
        cpu = sum(worker.cpu() - before for worker, before in zip(workers, used, strict=True))
        rss = [worker.peak_rss_mb() for worker in workers]
        tasks = sum(worker.tasks() for worker in workers)
        retries = sum(worker.log().count("connector.queue: retrying") for worker in workers)
    except BaseException:
        for worker in workers:
            log(f"worker {worker.n} log:\n{worker.log()[-3000:]}")
        raise
    finally:
        for worker in workers:
            worker.stop()
    last = ws.last_finished()
    wall = (last if last and start < last <= drained else drained) - start
    return WorkersMeasure(wall, enqueue.cpu + cpu, max(rss), rss, tasks, retries)


class BenchWorker:
    """`connector worker -c 1` (counting the source's reads) in a session of its own."""

    def __init__(self, ws: Workspace, n: int, env: dict[str, str]) -> None:
        self.n, self.path = n, ws.root / f"worker-{n}.log"
        full = {**os.environ, **env}
        full.pop("PYTHONDONTWRITEBYTECODE", None)
        argv = ws.child("-v", "worker", "-c", "1", "-n", f"bench-{n}@%h")
        with self.path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ws.root, env=full, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace")

    def tasks(self) -> int:
        """How many tasks the worker took (its log says so at -v)."""
        return sum(
            1
            for line in self.log().splitlines()
            if "connector.run_jobs[" in line and "received" in line
        )

    def ready(self) -> None:
        deadline = time.monotonic() + 120
        while " ready." not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.n} did not start")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The worker's process and its children (the pool)."""
        found = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    found.append(int(stat.parent.name))
        return found

    def cpu(self) -> float:
        """CPU seconds used so far by the worker and its children, live and ended."""
        ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """The largest peak RSS (VmHWM) among the worker's processes."""
        peak = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        return peak / 1024

    def stop(self) -> None:
        """SIGTERM to the worker's own process group (by its id), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def recreate_pg(database: str, *, create: bool = True) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        if create:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    admin.dispose()


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def expected(source: Path) -> dict[str, collections.Counter[tuple[str, ...]]]:
    """What each area's partner must hold: the consented, living people of the area."""
    found: dict[str, collections.Counter[tuple[str, ...]]] = collections.defaultdict(
        collections.Counter
    )
    for p in read_csv(source):
        if (p["Contact OK"], p["Local organizing OK"], p["Deceased"]) == ("yes", "yes", "no"):
            found[p["Area"]][p["First Name"], p["Last Name"], p["Email"], p["City"]] += 1
    return found


def held(path: Path) -> collections.Counter[tuple[str, ...]]:
    rows = read_csv(path)
    for row in rows:
        if set(row) != {"id", *FIELDS}:
            raise AssertionError(f"{path.name}: columns {sorted(row)}, expected id, {FIELDS}")
    return collections.Counter(tuple(row[f] for f in FIELDS) for row in rows)


def check_targets(network: Workspace, baseline: Workspace) -> int:
    """Every partner holds exactly its area's consented people, with only the allowed
    columns; together they hold exactly what the one job holds. Returns the rows held."""
    want = expected(network.source)
    union: collections.Counter[tuple[str, ...]] = collections.Counter()
    for i in range(network.partners):
        got = held(network.root / "out" / f"{partner(i)}.csv")
        if got != want.get(area(i), collections.Counter()):
            raise AssertionError(f"partner {partner(i)} does not hold exactly its area's people")
        union.update(got)  # (not +=: it rescans the whole union for each partner)
    everyone = held(baseline.root / "out" / f"{BASELINE}.csv")
    if union != everyone:
        raise AssertionError("the partners together do not hold what the one job holds")
    return sum(everyone.values())


def modes_for(store: str, workers: Sequence[int], in_process: bool) -> list[str]:
    """The modes measured on `store`: the one job, the network in one process, and (on
    PostgreSQL) the network on each number of worker processes."""
    chosen = ["baseline"]
    if in_process or store != "postgresql" or not workers:
        chosen.append("network")
    if store == "postgresql":
        chosen += [f"workers-{n}" for n in workers]
    return chosen


def run_bench(
    people_count: int,
    partners: int,
    stores: list[str],
    changed: float = 0.01,
    workers: Sequence[int] = (),
    in_process: bool = True,
    group_limit: int | None = None,
) -> dict[str, Any]:
    """Every mode on each store kind: a first run, then an incremental run after `changed`
    of the people changed; targets checked after each. `group_limit`: jobs per task on the
    workers (default: the queue's, 32)."""
    base = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    source, source_changed = base / "people.csv", base / "people-changed.csv"
    log(f"writing {people_count:,} people over {partners:,} areas")
    write_people(source, people_count, partners)
    write_people(source_changed, people_count, partners, changed)
    results: dict[str, Any] = {}
    spaces: dict[str, Workspace] = {}
    try:
        for store in stores:
            spaces = {}
            for mode in modes_for(store, workers, in_process):
                spaces[mode] = Workspace(base / store / mode, mode, store, partners, group_limit)
            found: dict[str, dict[str, Any]] = {mode: {} for mode in spaces}
            for phase, data in (("first", source), ("incremental", source_changed)):
                for mode, ws in spaces.items():
                    shutil.copy(data, ws.source)
                    log(f"{store} {mode} {phase} run")
                    found[mode][phase] = ws.run()
                    log(f"  {_short(found[mode][phase])}")
                    if ws.is_network:
                        found[mode][phase]["rows"] = check_targets(ws, spaces["baseline"])
            results[store] = found
            for ws in spaces.values():
                ws.drop()
    finally:
        for ws in spaces.values():
            ws.drop()
        shutil.rmtree(base, ignore_errors=True)
    summary = summarize(results, people_count, partners, changed)
    if workers:
        summary["group_limit"] = group_limit or 32
    return summary


def _short(run: dict[str, Any]) -> str:
    return (
        f"{run['seconds']:.2f} s, cpu {run['cpu']:.2f} s, {run['rss_mb']:.0f} MB, "
        f"{run['reads']} read(s), {run['opens']} open(s), {run.get('statements', '?')} "
        f"statement(s), state {run['state_bytes']:,} B"
    )


def summarize(
    results: dict[str, Any], people_count: int, partners: int, changed: float
) -> dict[str, Any]:
    """Ratios against the baseline and the per-job overhead, per store kind (of the
    network in one process, else on one worker); the speed-up of N workers over one."""
    for found in results.values():
        net, one = found[primary(found)], found["baseline"]
        found["ratios"] = {
            "first": net["first"]["seconds"] / one["first"]["seconds"],
            "incremental": net["incremental"]["seconds"] / one["incremental"]["seconds"],
            "incremental/first": net["incremental"]["seconds"] / net["first"]["seconds"],
            "baseline incremental/first": one["incremental"]["seconds"] / one["first"]["seconds"],
        }
        found["per_job_ms"] = {
            phase: 1000 * (net[phase]["seconds"] - one[phase]["seconds"]) / partners
            for phase in ("first", "incremental")
        }
        if "workers-1" in found:
            one_worker = found["workers-1"]
            found["speedup"] = {
                mode: {
                    phase: {
                        "wall": one_worker[phase]["seconds"] / found[mode][phase]["seconds"],
                        "cpu": found[mode][phase]["cpu"] / one_worker[phase]["cpu"],
                    }
                    for phase in ("first", "incremental")
                }
                for mode in found
                if mode.startswith("workers-")
            }
    return {
        "people": people_count,
        "partners": partners,
        "changed": changed,
        "stores": results,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        },
    }


def primary(found: dict[str, Any]) -> str:
    """The network mode the targets are read from: in one process, else the fewest workers."""
    if "network" in found:
        return "network"
    return min((m for m in found if m.startswith("workers-")), key=lambda m: int(m[8:]))


def measured_modes(found: dict[str, Any]) -> list[str]:
    return [m for m in found if m == "baseline" or m == "network" or m.startswith("workers-")]


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(results: dict[str, Any], notes: list[str] | None = None) -> str:
    """A section of bench/RESULTS-scale.md for one run."""
    m = results["machine"]
    p, n = results["partners"], results["people"]
    lines = [
        f"## {n:,} people, {p:,} partner jobs ({m['date']})",
        "",
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, Python {m['python']}), a "
        "machine shared with other work. Produced by `python -m bench.scale_bench "
        f"--people {n} --partners {p}{workers_flag(results)}`. Modes: one job; "
        f"{p:,} jobs in one process (`connector run --all`); {p:,} jobs on N `connector "
        "worker -c 1` processes (`run --all --queue`, wall from its start to the last job's "
        "end, CPU of it and of the workers from ready to drained, peak RSS: the largest "
        "worker's).",
        "",
        "| store | mode | phase | wall | x one job | CPU | x one job | peak RSS | source reads "
        "| opens | statements | state size |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for store, found in results["stores"].items():
        for phase in ("first", "incremental"):
            for mode in measured_modes(found):
                label = mode_label(mode, p)
                row = found[mode][phase]
                ratio = row["seconds"] / found["baseline"][phase]["seconds"]
                cpu = row["cpu"] / found["baseline"][phase]["cpu"]
                lines.append(
                    f"| {store} | {label} | {phase} | {row['seconds']:.1f} s | {ratio:.2f} "
                    f"| {row['cpu']:.1f} s | {cpu:.2f} | {row['rss_mb']:.0f} MB "
                    f"| {row['reads']} | {row['opens']} | {row.get('statements', '-')} "
                    f"| {row['state_bytes'] / 1e6:.1f} MB |"
                )
    lines += ["", "Targets (issue 15):", ""]
    for store, found in results["stores"].items():
        r, net = found["ratios"], found[primary(found)]
        reads = net["first"]["reads"]
        cpu = net["first"]["cpu"] / found["baseline"]["first"]["cpu"]
        lines.append(
            f"- {store}: first run {r['first']:.2f}x one job, {cpu:.2f}x in CPU time "
            f"(≤ {TARGET_FIRST:g}x: "
            f"{verdict(r['first'] <= TARGET_FIRST)}); incremental run after "
            f"{results['changed']:.0%} changed {r['incremental/first']:.1%} of the first run "
            f"(≤ {TARGET_INCREMENTAL:.0%}: {verdict(r['incremental/first'] <= TARGET_INCREMENTAL)};"
            f" one job alone: {r['baseline incremental/first']:.1%}); source read {reads} "
            f"time(s) (once: {verdict(reads == 1)}); per-job overhead "
            f"{found['per_job_ms']['first']:.1f} ms first, "
            f"{found['per_job_ms']['incremental']:.1f} ms incremental; "
            f"{net['first']['rows']:,} rows shared in all, "
            f"{net['first']['state_bytes'] / max(net['first']['rows'], 1):,.0f} B of state "
            f"per row ({mode_label(primary(found), p)})."
        )
        for mode, phases in found.get("speedup", {}).items():
            if mode == "workers-1":
                continue
            w = int(mode.split("-")[1])
            first, incr = phases["first"], phases["incremental"]
            target = f" (≥ {TARGET_WORKERS:g}x: {verdict(first['wall'] >= TARGET_WORKERS)})"
            rss = ", ".join(f"{r:.0f}" for r in found[mode]["first"]["worker_rss_mb"])
            lines.append(
                f"- {store}: {w} workers {first['wall']:.2f}x one worker's speed on the first "
                f"run{target if w == 2 else ''}, {incr['wall']:.2f}x on the incremental run; "
                f"CPU {first['cpu']:.2f}x / {incr['cpu']:.2f}x one worker's; "
                f"{found[mode]['first']['tasks']} task(s) (group_limit "
                f"{results.get('group_limit')}), {found[mode]['first']['retries']} retried; "
                f"peak RSS per worker {rss} MB."
            )
    lines += [""] + [f"- {note}" for note in notes or []]
    return "\n".join(lines).rstrip() + "\n"


def mode_label(mode: str, partners: int) -> str:
    if mode == "baseline":
        return "one job"
    if mode == "network":
        return f"{partners:,} jobs"
    return f"{partners:,} jobs, {mode.split('-')[1]} worker(s)"


def workers_flag(results: dict[str, Any]) -> str:
    counts = sorted(
        {int(m.split("-")[1]) for f in results["stores"].values() for m in f if "workers-" in m}
    )
    if not counts:
        return ""
    flags = f" --workers {','.join(map(str, counts))}"
    if results.get("group_limit", 32) != 32:
        flags += f" --group-limit {results['group_limit']}"
    if not any("network" in found for found in results["stores"].values()):
        flags += " --no-in-process"
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--partners", type=int, default=15_000)
    parser.add_argument("--stores", default="postgresql,sqlite")
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--note", action="append", default=[])
    parser.add_argument(
        "--workers", default="", help="e.g. 1,2,4: the network also on N worker processes "
        "(PostgreSQL state, Redis broker at $SCALE_BENCH_BROKER or redis://127.0.0.1:6379/12)",
    )  # fmt: skip
    parser.add_argument(
        "--group-limit", type=int,
        help="jobs per task on the workers (default: the queue's, 32)",
    )  # fmt: skip
    parser.add_argument(
        "--no-in-process", action="store_true",
        help="with --workers: skip the in-process network run on PostgreSQL",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--from-json", type=Path)
    parser.add_argument("--write-results", action="store_true", help="append to RESULTS-scale.md")
    args = parser.parse_args()
    if args.from_json:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        stores = [s for s in args.stores.split(",") if s]
        workers = [int(n) for n in args.workers.split(",") if n]
        results = run_bench(
            args.people,
            args.partners,
            stores,
            args.changed,
            workers,
            not args.no_in_process,
            args.group_limit,
        )
    if args.json:
        print(json.dumps(results, indent=1))
        return
    page = render(results, args.note)
    print(page)
    if args.write_results:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + page)


if __name__ == "__main__":
    main()
