"""A national network of 50 local partners: one national list, a partner registry, one job
template. Every partner receives only the people of its region who agreed to local
organizing, with only the fields its policy allows; a partner removed from the registry is
retired and its data taken back.

Run it with one command, from anywhere:  python examples/national/run.py
Everything happens in a temp folder (or --work DIR): the national CSV (generated, the same
every time), the state store, and the partners' CSV files under out/.

With workers:  python examples/national/run.py --workers 2
The same network and checks, but the jobs run on N `connector worker` processes: the state
store is a fresh database on the machine's PostgreSQL (dropped at the end), the broker a
queue of its own on the machine's Redis; `connector run --all --queue` puts the jobs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIELDS = ["first_name", "last_name", "email", "city"]  # what policies/partner-local.yaml shows
HEADER = [
    "Person ID", "First Name", "Last Name", "Email", "Phone", "Street", "Postcode", "City",
    "Region", "Country", "Deceased", "Contact OK", "Local organizing OK",
]  # fmt: skip
FIRST = ("Ana", "Bruno", "Chloé", "Dmitri", "Efua", "Farid", "Grace", "Hiro", "Ines", "Jonas")
LAST = ("Diallo", "Okafor", "Nowak", "García", "Smith", "Chen", "Haddad", "Evans", "Kaur", "Berg")
STREETS = ("Mill Lane", "High Street", "Station Road", "Church Street", "Park Avenue")
NO_PARTNER = "Orkney"  # people of a region no partner covers go to nobody
RETIRED = "york-south"  # the partner the example removes from the registry
LEDGER_KEY = secrets.token_hex(32)
ENV = {
    "CONNECTOR_DEMO_HASH_KEY": "national-example-hash-key",
    "EXAMPLE_LEDGER_KEY": LEDGER_KEY,
    # fixed, so that every run of the example gives each person the same target key (`id`)
    "EXAMPLE_KEY_SECRET": "national-example-target-key-secret",
}
POSTGRES = os.environ.get("CONNECTOR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
WORKER = [sys.executable, "-m", "connector_core", "-v", "worker", "-c", "1"]
WORKER = [sys.executable, "-m", "connector_core", "-v", "worker", "-c", "1"]
BROKER = "redis://127.0.0.1:6379/11"  # a database number of its own; a queue name per run


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def registry(work: Path) -> list[dict[str, str]]:
    with (work / "partners.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_people(path: Path, count: int, regions: list[str]) -> None:
    """The national CSV: `count` people, the same every time (a fixed seed)."""
    rng = random.Random(2026)
    areas = [*regions, NO_PARTNER]
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        for n in range(1, count + 1):
            first, last, region = rng.choice(FIRST), rng.choice(LAST), rng.choice(areas)
            out.writerow([
                f"P{n:05d}", first, last, f"{first.lower()}.{last.lower()}{n}@example.org",
                f"+44 113 496 {rng.randrange(10000):04d}",
                f"{rng.randrange(1, 200)} {rng.choice(STREETS)}", f"AB{rng.randrange(1, 30)} 1CD",
                f"{region} {rng.choice(('Centre', 'East', 'West'))}", region, "GB",
                "yes" if rng.random() < 0.02 else "no",
                rng.choice(("yes", "yes", "yes", "no", "")),  # "" : no evidence, no consent
                rng.choice(("yes", "yes", "no", "")),
            ])  # fmt: skip


def expected(work: Path, region: str) -> set[str]:
    """The emails a partner of `region` may hold: consented, alive, of its region."""
    return {
        p["Email"]
        for p in rows(work / "people.csv")
        if p["Region"] == region
        and p["Contact OK"] == "yes"
        and p["Local organizing OK"] == "yes"
        and p["Deceased"] == "no"
    }


def connector(work: Path, *args: str, show: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "connector_core", *args],
        cwd=work, env=os.environ | ENV, capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(f"$ connector {' '.join(args)}")
    lines = (done.stdout + done.stderr).rstrip().splitlines()
    if show:
        print("\n".join(lines if len(lines) <= 12 else [*lines[:10], "...", *lines[-2:]]))
    if done.returncode != 0:
        raise SystemExit(f"connector {args[0]} failed with exit status {done.returncode}")
    return done.stdout


def network(
    work: Path, people: int, state_url: str | None, queue: str | None = None
) -> list[dict[str, str]]:
    """The example's files in `work`, and the people generated; returns the registry.
    `queue`: the name of a queue on BROKER, for workers."""
    shutil.copy(HERE / "connector.yaml", work / "connector.yaml")
    shutil.copy(HERE / "partners.csv", work / "partners.csv")
    shutil.copytree(HERE / "policies", work / "policies")
    shutil.copy(REPO / "policies" / "network-floor.yaml", work / "network-floor.yaml")
    if state_url:  # e.g. a PostgreSQL store shared by worker processes
        with (work / "connector.yaml").open("a", encoding="utf-8") as f:
            f.write(f"\nstate:\n  url: {state_url}\n")
    if queue:
        with (work / "connector.yaml").open("a", encoding="utf-8") as f:
            f.write(f"\nqueue:\n  broker: {BROKER}\n  queue: {queue}\n")
    (work / "out").mkdir()
    partners = registry(work)
    write_people(work / "people.csv", people, sorted({p["region"] for p in partners}))
    return partners


def move(work: Path, old: str, new: str) -> str:
    """The first consented person of region `old` moves to `new`; returns their email."""
    people = rows(work / "people.csv")
    person = next(p for p in people if p["Email"] in expected(work, old))
    person["Region"], person["City"] = new, f"{new} Centre"
    with (work / "people.csv").open("w", encoding="utf-8", newline="") as f:
        out = csv.DictWriter(f, fieldnames=HEADER)
        out.writeheader()
        out.writerows(people)
    return person["Email"]


def check(work: Path, partners: list[dict[str, str]]) -> int:
    """Each partner's CSV holds exactly its region's consented people, only allowed fields."""
    total = 0
    for partner in partners:
        held = rows(work / partner["target"])
        if held and sorted(held[0]) != sorted(["id", *FIELDS]):
            raise SystemExit(f"{partner['name']}: columns {sorted(held[0])}, expected {FIELDS}")
        emails = {r["email"] for r in held}
        if len(emails) != len(held) or emails != expected(work, partner["region"]):
            raise SystemExit(f"{partner['name']} does not hold exactly its region's people")
        total += len(held)
    return total


class Workers:
    """N `connector worker` processes of this network, each in a session of its own (so
    that stopping one by its process id stops its pool too), with a log file each."""

    def __init__(self, work: Path, count: int, queue: str) -> None:
        from connector_core.sync.queue import QueueSettings

        self.work, self.count = work, count
        self.settings = QueueSettings(url=BROKER, shown=BROKER, queue=queue)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def log(self, n: int) -> Path:
        return self.work / "workers" / f"worker-{n}.log"

    def start(self) -> None:
        """Start the workers and wait until each takes tasks."""
        (self.work / "workers").mkdir(exist_ok=True)
        first = self.started
        for n in range(first, first + self.count):
            with self.log(n).open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [*WORKER, "-n", f"national-{n}@%h"],
                        cwd=self.work,
                        env=os.environ | ENV,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        self.started += self.count
        deadline = time.monotonic() + 60
        for n, proc in enumerate(self.procs, start=first):
            while b" ready." not in self.log(n).read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker {n} did not start:\n{self.tail(n)}")
                time.sleep(0.1)
        print(f"{self.count} worker(s) started, pids {', '.join(str(p.pid) for p in self.procs)}")

    def drain(self, timeout: float = 600) -> None:
        """Wait until the queue is drained (nothing waiting, taken or running)."""
        from connector_core.sync.queue import wait_drained

        deadline = time.monotonic() + timeout
        while not wait_drained(self.settings, timeout=5, poll=0.3):
            for n, proc in enumerate(self.procs, start=self.started - self.count):
                if proc.poll() is not None:
                    raise SystemExit(f"worker {n} stopped:\n{self.tail(n)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the queue did not drain in {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the workers by their process ids (SIGTERM: running tasks finish first)."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        if self.procs:
            print(f"{len(self.procs)} worker(s) stopped")
        self.procs = []

    def tail(self, n: int) -> str:
        lines = self.log(n).read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-20:])


@contextlib.contextmanager
def database(server: str) -> Iterator[str]:
    """A fresh PostgreSQL database on `server` (dropped afterwards), as a state store URL."""
    import sqlalchemy as sa

    name = f"connector_national_{secrets.token_hex(4)}"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        raise SystemExit(f"PostgreSQL is not reachable at {server}: {exc.orig}") from None
    print(f"state store: a fresh PostgreSQL database {name}")
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Runner:
    """`connector run --all`: in this process's child, or queued for the workers."""

    def __init__(self, work: Path, workers: Workers | None) -> None:
        self.work, self.workers = work, workers

    def run_all(self, show: bool = True) -> None:
        if self.workers is None:
            connector(self.work, "run", "--all", show=show)
            return
        connector(self.work, "run", "--all", "--queue", show=show)
        self.workers.drain()
        status = json.loads(connector(self.work, "status", "--json", show=False))
        failed = [entry["job"] for entry in status if entry["state"] not in ("ok", "retired")]
        if failed:
            raise SystemExit(f"jobs not run to their end on the workers: {', '.join(failed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=3000, help="people in the national CSV")
    parser.add_argument("--work", type=Path, help="work folder (default: a temp folder)")
    parser.add_argument("--state-url", help="state store URL (default: SQLite in the folder)")
    parser.add_argument(
        "--workers", type=int, default=0, metavar="N",
        help="run the jobs on N `connector worker` processes (the machine's PostgreSQL and "
        f"Redis: a fresh database on {POSTGRES}, a queue of its own on {BROKER})",
    )  # fmt: skip
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="national-"))
        work = args.work or Path(tmp) / "national"
        work.mkdir(parents=True, exist_ok=False)
        state_url, queue, workers = args.state_url, None, None
        if args.workers:
            if state_url is None:
                state_url = stack.enter_context(database(POSTGRES))
            queue = f"fifty-partners-{secrets.token_hex(4)}"  # (no run of a secret in it)
        partners = network(work, args.people, state_url, queue)
        if queue:
            workers = Workers(work, args.workers, queue)
            stack.callback(workers.stop)
        example(work, partners, args.people, Runner(work, workers))


def example(work: Path, partners: list[dict[str, str]], people: int, runner: Runner) -> None:
    """The example's steps and checks, with the jobs run by `runner`."""
    workers = runner.workers
    say(f"{people} people in people.csv, {len(partners)} partners in partners.csv")
    listed = connector(work, "jobs", show=False).splitlines()
    print(f"{len(listed)} jobs from the template `local`, e.g. {listed[0]}")
    if workers is not None:
        say(f"{workers.count} worker(s) take the jobs from the queue {workers.settings.queue}")
        workers.start()

    say("One run: every partner decided from one read of the national CSV")
    runner.run_all()
    total = check(work, partners)
    print(f"each of the {len(partners)} partners holds exactly the people of its region who")
    columns = ", ".join(["id", *FIELDS])
    print(f"agreed to local organizing ({total} rows in all), with columns {columns}")
    nobody = sum(1 for p in rows(work / "people.csv") if p["Region"] == NO_PARTNER)
    print(f"the {nobody} people of {NO_PARTNER} (no partner there) went to nobody")

    say("Someone moves from Leeds to York: the next run moves them between partners")
    mover = move(work, "Leeds", "York")
    runner.run_all(show=False)
    check(work, partners)
    held = {p["name"]: {r["email"] for r in rows(work / p["target"])} for p in partners}
    holders = [name for name, emails in held.items() if mover in emails]
    print(f"{mover} is now held by {', '.join(holders)} only")

    say(f"{RETIRED} leaves the network: its row is removed from partners.csv")
    before = len(rows(work / f"out/{RETIRED}.csv"))
    kept = [p for p in partners if p["name"] != RETIRED]
    with (work / "partners.csv").open("w", encoding="utf-8", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(partners[0]), lineterminator="\n")
        out.writeheader()
        out.writerows(kept)
    if workers is not None:  # a worker reads the registry when it starts (docs/operations.md)
        print("the registry changed: the workers are restarted")
        workers.stop()
        workers.start()
    runner.run_all()
    after = len(rows(work / f"out/{RETIRED}.csv"))
    print(f"out/{RETIRED}.csv held {before} people, now {after}")
    ledger = connector(work, "ledger", "export", show=False)
    retired = sum(1 for line in ledger.splitlines() if '"partner-retired"' in line)
    print(f"the ledger records {retired} take-backs with reason partner-retired")
    check(work, kept)
    if before == 0 or after != 0 or retired != before:
        raise SystemExit("the retired partner's data was not taken back as it should")
    how = f" on {workers.count} worker(s)" if workers else ""
    print(
        f"\nOK: 50 partners served from one template{how}; the retired partner's data taken back."
    )


if __name__ == "__main__":
    main()
