"""A national network of 50 local partners: one national list, a partner registry, one job
template. Every partner receives only the people of its region who agreed to local
organizing, with only the fields its policy allows; a partner removed from the registry is
retired and its data taken back.

Run it with one command, from anywhere:  python examples/national/run.py
Everything happens in a temp folder (or --work DIR): the national CSV (generated, the same
every time), the state store, and the partners' CSV files under out/.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
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
    env = os.environ | {
        "CONNECTOR_DEMO_HASH_KEY": "national-example-hash-key",
        "EXAMPLE_LEDGER_KEY": LEDGER_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-m", "connector_core", *args],
        cwd=work, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(f"$ connector {' '.join(args)}")
    lines = (done.stdout + done.stderr).rstrip().splitlines()
    if show:
        print("\n".join(lines if len(lines) <= 12 else [*lines[:10], "...", *lines[-2:]]))
    if done.returncode != 0:
        raise SystemExit(f"connector {args[0]} failed with exit status {done.returncode}")
    return done.stdout


def network(work: Path, people: int, state_url: str | None) -> list[dict[str, str]]:
    """The example's files in `work`, and the people generated; returns the registry."""
    shutil.copy(HERE / "connector.yaml", work / "connector.yaml")
    shutil.copy(HERE / "partners.csv", work / "partners.csv")
    shutil.copytree(HERE / "policies", work / "policies")
    shutil.copy(REPO / "policies" / "network-floor.yaml", work / "network-floor.yaml")
    if state_url:  # e.g. a PostgreSQL store shared by worker processes
        with (work / "connector.yaml").open("a", encoding="utf-8") as f:
            f.write(f"\nstate:\n  url: {state_url}\n")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=3000, help="people in the national CSV")
    parser.add_argument("--work", type=Path, help="work folder (default: a temp folder)")
    parser.add_argument("--state-url", help="state store URL (default: SQLite in the folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="national-") as tmp:
        work = args.work or Path(tmp) / "national"
        work.mkdir(parents=True, exist_ok=False)
        partners = network(work, args.people, args.state_url)
        say(f"{args.people} people in people.csv, {len(partners)} partners in partners.csv")
        listed = connector(work, "jobs", show=False).splitlines()
        print(f"{len(listed)} jobs from the template `local`, e.g. {listed[0]}")

        say("One run: every partner decided from one read of the national CSV")
        connector(work, "run", "--all")
        total = check(work, partners)
        print(f"each of the {len(partners)} partners holds exactly the people of its region who")
        columns = ", ".join(["id", *FIELDS])
        print(f"agreed to local organizing ({total} rows in all), with columns {columns}")
        nobody = sum(1 for p in rows(work / "people.csv") if p["Region"] == NO_PARTNER)
        print(f"the {nobody} people of {NO_PARTNER} (no partner there) went to nobody")

        say("Someone moves from Leeds to York: the next run moves them between partners")
        mover = move(work, "Leeds", "York")
        connector(work, "run", "--all", show=False)
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
        connector(work, "run", "--all")
        after = len(rows(work / f"out/{RETIRED}.csv"))
        print(f"out/{RETIRED}.csv held {before} people, now {after}")
        ledger = connector(work, "ledger", "export", show=False)
        retired = sum(1 for line in ledger.splitlines() if '"partner-retired"' in line)
        print(f"the ledger records {retired} take-backs with reason partner-retired")
        check(work, kept)
        if before == 0 or after != 0 or retired != before:
            raise SystemExit("the retired partner's data was not taken back as it should")
        print("\nOK: 50 partners served from one template; the retired partner's data taken back.")


if __name__ == "__main__":
    main()
