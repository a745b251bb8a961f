"""`connector approvals list|show|approve|deny|export|import`: people decide held change sets.

A run holds the changes a policy's ``approval:`` names in change sets
(:mod:`connector_core.sync.approvals`). Approvers review a set (``show``: what the recipient
would receive, masked as they would see it), and approve or deny it with a signed statement
over the set's hash, here (``approve``/``deny`` with their private key) or on their own
machine from an exported review file (``export``, then ``ssh-keygen -Y sign``, then
``import``). The next run writes a set with quorum.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import click

from connector_core.cli.app import App, emit_json
from connector_core.cli.ledger import open_store
from connector_core.cli.policy import PolicyEnv
from connector_core.errors import ConfigError, ExitCode
from connector_core.files import write_output
from connector_core.policy.compiler import compile_policy
from connector_core.policy.models import ApprovalModel
from connector_core.scrub import scrub
from connector_core.sync.approval_book import OPEN, ApprovalSet, Decision
from connector_core.sync.approvals import (
    APPROVAL_NAMESPACE,
    match_statement,
    statement_text,
    take_statement,
    tally,
)
from connector_core.sync.job import load_job, load_job_policy
from connector_core.sync.runner import RunResult, run_job
from connector_core.sync.state import StateStore

PASSPHRASE_ENV = "CONNECTOR_KEY_PASSPHRASE"


@click.group()
def approvals() -> None:
    """Review, approve and deny the change sets held for approval."""


@approvals.command(name="list")
@click.option("--job", help="Only the sets of this job.")
@click.option("--all", "every", is_flag=True, help="Also sets already decided or lapsed.")
@click.option("--json", "as_json", is_flag=True, help="Print the sets as JSON.")
@click.pass_obj
def list_sets(app: App, job: str | None, every: bool, as_json: bool) -> None:
    """List the change sets waiting for approval (with --all, every set)."""
    with open_store(app, read_only=True) as store:
        book = store.approvals()
        sets = book.sets(job, None if every else OPEN)
        rows = [_set_json(aset, [s.person for s in book.statements(aset.id)]) for aset in sets]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No change set waits for approval.", err=True)
    for row in rows:
        click.echo(
            f"#{row['id']}  {row['job']}  {row['status']}  {row['changes']} change(s)  "
            f"statements: {', '.join(row['statements']) or 'none'}  "
            f"held {row['created_at']}"
        )


@approvals.command()
@click.argument("set_id", type=int)
@click.option("--sample", default=3, show_default=True, help="Records shown, masked.")
@click.option("--json", "as_json", is_flag=True, help="Print the review as JSON.")
@click.pass_obj
def show(app: App, set_id: int, sample: int, as_json: bool) -> None:
    """Show what set SET_ID would send, masked exactly as the recipient would see it.

    This reads the source as a dry run (nothing is written): counts, fields, a small
    sample, what is withheld and why, and what changed since the last approved set.
    """
    with open_store(app, read_only=True) as store:
        review = _review(app, store, set_id, sample)
    if as_json:
        emit_json(review)
        return
    click.echo(f"Set #{review['id']} of job {review['job']} (policy {review['policy']}): "
               f"{review['status']}")  # fmt: skip
    click.echo(f"  hash: {review['set_hash']}")
    click.echo(f"  changes: {review['counts']}")
    click.echo(f"  fields the recipient receives: {_labels(review['fields'])}")
    click.echo(f"  statements: {', '.join(review['statements']) or 'none yet'}")
    for line in review["next_run"]:
        click.echo(f"  next run: {line}")
    click.echo(f"  withheld by this policy: {review['withheld'] or 'nothing'}")
    click.echo(f"  since the last approved set: {review['since_last']}")
    click.echo(f"  sample ({len(review['sample'])} of {review['counts']['changes']}):")
    for record in review["sample"]:
        click.echo("    " + json.dumps(record, ensure_ascii=False, sort_keys=True))


@approvals.command()
@click.argument("set_id", type=int)
@click.option("--as", "person", required=True, help="Your name as declared under approvers:.")
@click.option(
    "--key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Your private OpenSSH key (a passphrase is read from ${PASSPHRASE_ENV}).",
)
@click.pass_obj
def approve(app: App, set_id: int, person: str, key: Path) -> None:
    """Approve set SET_ID: sign its hash with your key."""
    _decide(app, set_id, person, key, "approve")


@approvals.command()
@click.argument("set_id", type=int)
@click.option("--as", "person", required=True, help="Your name as declared under approvers:.")
@click.option(
    "--key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Your private OpenSSH key (a passphrase is read from ${PASSPHRASE_ENV}).",
)
@click.pass_obj
def deny(app: App, set_id: int, person: str, key: Path) -> None:
    """Deny set SET_ID: sign a denial of its hash with your key (one denial denies it)."""
    _decide(app, set_id, person, key, "deny")


@approvals.command(name="export")
@click.argument("set_id", type=int)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Folder for the review file and the two statement texts.",
)
@click.option("--sample", default=3, show_default=True, help="Records in the masked sample.")
@click.pass_obj
def export_set(app: App, set_id: int, out_dir: Path, sample: int) -> None:
    """Write set SET_ID's review file and statement texts for a remote approver.

    \b
    The approver reads review-ID.json, then signs one text with their own key:
      ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n commons-connector-approval approve-ID.txt
    and sends back approve-ID.txt.sig, which `connector approvals import` takes.
    """
    with open_store(app, read_only=True) as store:
        review = _review(app, store, set_id, sample)
    out_dir.mkdir(parents=True, exist_ok=True)
    exported = {k: v for k, v in review.items() if k not in ("statements",)}
    exported["namespace"] = APPROVAL_NAMESPACE
    for decision in ("approve", "deny"):
        text = statement_text(review["set_hash"], decision).decode()
        exported[f"{decision}_text"] = text
        path = out_dir / f"{decision}-{set_id}.txt"
        write_output(path, functools.partial(_write, text))
    path = out_dir / f"review-{set_id}.json"
    body = scrub(json.dumps(exported, indent=2, ensure_ascii=False, default=str) + "\n")
    write_output(path, functools.partial(_write, body))
    click.echo(f"wrote {path}, approve-{set_id}.txt and deny-{set_id}.txt", err=True)


@approvals.command(name="import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.pass_obj
def import_statements(app: App, files: tuple[Path, ...]) -> None:
    """Take back signed statements (.sig files made with ssh-keygen -Y sign) and verify them.

    Each must be signed by a key declared under approvers: in connector.yaml, over the text
    of a set that waits now. Exit status 3 if any was refused (the others are kept).
    """
    refused = 0
    with open_store(app) as store:
        book = store.approvals()
        for path in files:
            try:
                signature = path.read_text(encoding="utf-8")
                person, aset, decision = match_statement(
                    signature, book.sets(None, OPEN), app.config.model.approvers
                )
                if aset.job.startswith("request:"):
                    raise ConfigError(
                        f"this statement decides share request {aset.job[8:]}: run `connector "
                        f"requests decide {aset.job[8:]} {decision} --statement {path}`"
                    )
                approval, policy_hash = _policy_of(app, aset)
                take_statement(
                    book, aset, person=person, decision=decision, signature=signature,
                    approval=approval, policy_hash=policy_hash,
                    approvers=app.config.model.approvers, now=dt.datetime.now(dt.UTC),
                )  # fmt: skip
            except (ConfigError, UnicodeDecodeError) as exc:
                refused += 1
                click.secho(f"{path}: refused: {exc}", fg="red", err=True)
                continue
            click.echo(f"{path}: {person} {decision}s set #{aset.id}")
    if refused:
        click.get_current_context().exit(ExitCode.CONFIG)


# -- helpers -------------------------------------------------------------------------------


def _decide(app: App, set_id: int, person: str, key: Path, decision: Decision) -> None:
    from connector_core import signing

    passphrase = os.environ.get(PASSPHRASE_ENV)
    with open_store(app) as store:
        book = store.approvals()
        aset = _get(store, set_id)
        approval, policy_hash = _policy_of(app, aset)
        message = statement_text(aset.set_hash, decision)
        signature = signing.sign(
            message, key, signing.NAMESPACE_APPROVAL, passphrase.encode() if passphrase else None
        )
        now = dt.datetime.now(dt.UTC)
        take_statement(
            book, aset, person=person, decision=decision, signature=signature,
            approval=approval, policy_hash=policy_hash, approvers=app.config.model.approvers,
            now=now,
        )  # fmt: skip
        counted = tally(aset, book.statements(set_id), approval, app.config.model.approvers, now)
    have = len({s.person for s in counted.approvals})
    verb = "approved" if decision == "approve" else "denied"
    click.echo(
        f"{person} {verb} set #{set_id} ({have} of {approval.quorum} approvals"
        + (", denied" if counted.denials else "")
        + f"); the next run of {aset.job} acts on it"
    )


def _get(store: StateStore, set_id: int) -> ApprovalSet:
    """Change set `set_id`; a set that decides a share request is pointed to `requests`."""
    from connector_core.sync.share_requests import SET_JOB

    aset = store.approvals().get(set_id)
    if aset is None:
        raise ConfigError(
            f"there is no change set #{set_id}",
            hint="`connector approvals list --all` lists every set.",
        )
    if aset.job.startswith(SET_JOB):
        request = aset.job.removeprefix(SET_JOB)
        raise ConfigError(
            f"set #{set_id} decides share request {request}, which the requests commands "
            "show and decide",
            hint=f"Run `connector requests show {request}`, then `connector requests decide "
            f"{request} approve|deny`.",
        )
    return aset


def _policy_of(app: App, aset: ApprovalSet) -> tuple[ApprovalModel, str]:
    """The approval block and content hash of the set's job's policy, as it is now."""
    env = PolicyEnv.from_app(app)
    job = app.config.job(aset.job)
    policy = load_job_policy(app.config, job.policy, env.masks)
    governing = policy.approver()
    if governing is None or governing.approval is None:
        raise ConfigError(
            f"the policy of job {aset.job} no longer asks for approval; set #{aset.id} lapses "
            "at the next run",
            hint=f"Run `connector run {aset.job}`.",
        )
    compiled = compile_policy(policy, masks=env.masks, context=env.context())
    return governing.approval, compiled.content_hash


@contextmanager
def _dry_run(app: App, store: StateStore, job: str) -> Iterator[RunResult]:
    env = PolicyEnv.from_app(app)
    loaded = load_job(app.config, job, masks=env.masks, context=env.context())
    try:
        # a full read: what the policy withholds is counted over the whole source
        yield run_job(loaded, store, dry_run=True, reconcile=True)
    finally:
        loaded.close()


def _review(app: App, store: StateStore, set_id: int, sample: int) -> dict[str, Any]:
    """What an approver needs to decide set `set_id`, masked as the recipient sees it."""
    book = store.approvals()
    aset = _get(store, set_id)
    members = {m.source_id for m in book.members(set_id)}
    with _dry_run(app, store, aset.job) as result:
        held = [c for c in result.awaiting if c.source_id in members]
        next_run = [m for m in result.approvals if m.startswith(f"set #{set_id}:")]
        withheld = dict(result.counts.withheld)
    review = _set_json(aset, [f"{s.person} {s.decision}s" for s in book.statements(set_id)])
    review["counts"] = {k: aset.summary.get(k) for k in ("changes", "actions", "kinds")}
    review["fields"] = aset.summary.get("fields", {})
    still = "still waits, unchanged" if aset.status in OPEN else f"nothing: it is {aset.status}"
    review["next_run"] = next_run or [still]
    review["withheld"] = withheld
    review["since_last"] = _since_last(store, aset)
    review["sample"] = [dict(c.projection or {}) for c in held[: max(sample, 0)]]
    return review


def _since_last(store: StateStore, aset: ApprovalSet) -> str:
    """How this set's fields differ from the last set of its job that was approved."""
    done = [s for s in store.approvals().sets(aset.job, ["released"]) if s.id < aset.id]
    if not done:
        return "no set of this job was approved before"
    last = done[-1]
    before, now = last.summary.get("fields", {}), aset.summary.get("fields", {})
    added = sorted(f for f in now if f not in before)
    changed = sorted(f for f in now if f in before and before[f] != now[f])
    parts = [f"set #{last.id} ({last.summary.get('changes', 0)} change(s))"]
    parts.append(f"new fields: {', '.join(added) or 'none'}")
    if changed:
        parts.append("fields shown differently: " + ", ".join(changed))
    return "; ".join(parts)


def _set_json(aset: ApprovalSet, statements: list[str]) -> dict[str, Any]:
    return {
        "id": aset.id,
        "job": aset.job,
        "policy": aset.policy,
        "policy_hash": aset.policy_hash,
        "set_hash": aset.set_hash,
        "status": aset.status,
        "created_at": aset.created_at.isoformat(timespec="seconds"),
        "escalated_at": aset.escalated_at and aset.escalated_at.isoformat(timespec="seconds"),
        "decided_at": aset.decided_at and aset.decided_at.isoformat(timespec="seconds"),
        "changes": aset.summary.get("changes", 0),
        "quorum": aset.summary.get("quorum"),
        "statements": statements,
        "note": aset.note,
    }


def _write(text: str, out: TextIO) -> None:
    out.write(text)


def _labels(fields: dict[str, str]) -> str:
    return ", ".join(f"{f} ({label})" for f, label in fields.items()) or "none"
