"""A partner requests a campaign's members; two approvers of two organizations approve (one
is away and the fallback decides); the data flows; the request expires and is taken back.

Run it with one command, from anywhere:  python examples/share-request/run.py
Everything happens in a temp folder (keys, state, the partner's CSV); the clock is moved with
CONNECTOR_NOW so that two days and then a month pass in seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from connector_core.policy.share_requests import load_request, sign_request

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=5)  # CONNECTOR_NOW only moves time forward
PEOPLE = {  # name: organization
    "alice": "Demo Climate Network",
    "bob": "Sunrise Housing Co-op",
    "dana": "Sunrise Housing Co-op",
}


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text(encoding="utf-8").strip()


def connector(
    work: Path, *args: str, at: dt.datetime, ok: bool = True, show: bool = True
) -> str:
    env = os.environ | {
        "CONNECTOR_NOW": at.isoformat(),
        "CONNECTOR_DEMO_HASH_KEY": "example-hash-key",
        "EXAMPLE_LEDGER_KEY": LEDGER_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-m", "connector_core", *args],
        cwd=work, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(f"$ connector {' '.join(args)}")
    print((done.stdout if show else "") + done.stderr.rstrip())
    if ok and done.returncode != 0:
        raise SystemExit(f"connector {args[0]} failed with exit status {done.returncode}")
    return done.stdout


def network(work: Path, keys: Path) -> None:
    shutil.copy(HERE / "connector.yaml", work / "connector.yaml")
    shutil.copy(REPO / "examples" / "demo" / "data" / "members.csv", work / "members.csv")
    shutil.copy(REPO / "policies" / "network-floor.yaml", work / "network-floor.yaml")
    lines = ["", "approvers:"]
    for name, org in PEOPLE.items():
        public = keygen(keys / name, name)
        lines.append(f"  {name}: {{organization: {org}, email: {name}@example.org, key: '{public}'}}")
    with (work / "connector.yaml").open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def partner_request(work: Path, keys: Path) -> Path:
    """What the partner writes and signs on its side."""
    body = {
        "version": 1,
        "kind": "share-request",
        "id": "sunrise-march",
        "network": "Demo Climate Network",
        "requester": {
            "name": "Ana Souza",
            "organization": "Sunrise Housing Co-op",
            "contact": "ana@sunrise.example.org",
            "public_key": keygen(keys / "partner", "ana@sunrise"),
        },
        "purpose": "share_with_partners",
        "fields": ["first_name", "email", "city", "street_address"],
        "scope": {"groups": {"any_of": ["climate-campaign"]}},
        "delivery": {"adapter": "csv", "settings": {"path": str(work / "partner" / "march.csv")}},
        "duration": "30d",
        "why": "To invite the campaign's members to the joint march and its planning calls.",
    }
    path = work / "sunrise-march.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    body["signature"] = sign_request(load_request(path), keys / "partner")
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def remote_statement(keys: Path, name: str, text: str) -> Path:
    """An approver on their own machine: plain ssh-keygen, no connector."""
    path = keys / f"{name}-approve.txt"
    path.write_text(text, encoding="utf-8")
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(keys / name), "-n",
         "commons-connector-approval", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path.with_suffix(".txt.sig")


def rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        work, keys = Path(tmp) / "network", Path(tmp) / "keys"
        work.mkdir()
        keys.mkdir()
        (work / "partner").mkdir()
        network(work, keys)
        say("The partner sends a signed request; the owner receives it (the floor cuts the street)")
        request = partner_request(work, keys)
        connector(work, "requests", "receive", str(request), at=T0)
        say("The approvers review it: what is cut, and a masked preview on the real data")
        connector(work, "requests", "show", "sunrise-march", at=T0)
        shown = connector(work, "requests", "show", "sunrise-march", "--json", at=T0, show=False)
        review = json.loads(shown)
        say("alice (Demo Climate Network) approves; bob (Sunrise Housing Co-op) is away")
        connector(work, "requests", "decide", "sunrise-march", "approve", "--as", "alice",
                  "--key", str(keys / "alice"), at=T0)  # fmt: skip
        say("dana, the fallback, may not decide before escalation...")
        dana = remote_statement(keys, "dana", review["approve_text"])
        connector(work, "requests", "decide", "sunrise-march", "approve", "--statement",
                  str(dana), at=T0, ok=False)  # fmt: skip
        later = T0 + dt.timedelta(days=2, hours=1)
        say("...two days later nobody else has decided: dana's signed statement counts")
        connector(work, "requests", "decide", "sunrise-march", "approve", "--statement",
                  str(dana), at=later)  # fmt: skip
        say("The approved request is a policy and a job; the data flows to the partner's CSV")
        connector(work, "run", "--all", at=later)
        shared = rows(work / "partner" / "march.csv")
        print(f"the partner's CSV holds {len(shared)} people with columns {sorted(shared[0])}")
        member = next(r for r in csv.DictReader((work / "members.csv").open(encoding="utf-8"))
                      if "climate-campaign" in r["Groups"] and r["Partner sharing OK"] == "yes"
                      and r["Contact OK"] == "yes")  # fmt: skip
        connector(work, "who-has", member["Contact ID"], at=later)
        after = later + dt.timedelta(days=31)
        say("A month later the request expires: the next run takes everything back")
        connector(work, "run", "--all", at=after)
        left = rows(work / "partner" / "march.csv")
        print(f"the partner's CSV holds {len(left)} people")
        connector(work, "requests", "list", at=after)
        say("The ledger keeps every step (no personal data in the request rows)")
        exported = connector(work, "ledger", "export", at=after, show=False)
        for line in exported.splitlines():
            row = json.loads(line)
            if row["action"].startswith("request-"):
                print(f"  {row['action']}: {row['reason']}")
        if not shared or left:
            raise SystemExit("the example did not share and take back as it should")
        print("\nOK: shared under approval, expired, taken back.")


LEDGER_KEY = secrets.token_hex(32)

if __name__ == "__main__":
    main()
