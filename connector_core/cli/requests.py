"""`connector requests receive|list|show|decide|revoke`: answer other groups' share requests.

A request is received (its signature checked), reviewed against the network floor and
previewed on real data, masked as the requester would see it, then decided by the approvers
connector.yaml names under ``requests: approval:`` with signed statements, as change sets are
(``connector approvals``). An approved request becomes a policy and a job, ``request-<id>``,
that shares until the request expires or is revoked, and then takes everything back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from connector_core.cli.app import App, emit_json
from connector_core.cli.ledger import open_store
from connector_core.cli.policy import PolicyEnv
from connector_core.cli.render import literal
from connector_core.cli.sync import share_requests_now as _now
from connector_core.errors import ConfigError
from connector_core.files import write_output
from connector_core.policy.share_requests import load_request, verify_request
from connector_core.sync import share_requests as flow
from connector_core.sync.approval_book import Decision
from connector_core.sync.approvals import (
    APPROVAL_NAMESPACE,
    match_statement,
    statement_text,
    take_statement,
)
from connector_core.sync.request_book import StoredRequest
from connector_core.sync.state import StateStore

PASSPHRASE_ENV = "CONNECTOR_KEY_PASSPHRASE"


@click.group()
def requests() -> None:
    """Receive, review, decide and revoke share requests from other groups."""


@requests.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def receive(app: App, file: Path) -> None:
    """Receive the signed share request FILE: check it and its signature, and store it.

    FILE may also be a requester's signed revocation (kind: share-request-revocation): the
    request's job then takes back everything it shared."""
    config = app.config
    flow.approval_of(config)  # a mistake in requests: is found before anything is stored
    revocation = _revocation(file)
    if revocation is not None:
        with open_store(app, keyed=True, create_key=True) as store:
            stored = _get(store, revocation[0])
            flow.verify_revocation(stored, revocation[1])
            notes = flow.end(store, config, stored, "revoked", "revoked by the requester", _now())
        for note in notes:
            click.echo(note)
        return
    request = load_request(
        file, purposes=list(config.model.consent.purposes), adapters=list(app.adapters)
    )
    verify_request(request)
    flow.check_delivery(config, request)
    if request.model.network != config.model.network.name:
        raise flow.RequestRefused(
            f"{file}: the request is addressed to the network {request.model.network!r}, "
            f"not to {config.model.network.name!r}",
            hint="A request is signed for one network; the requester writes one for this one.",
        )
    review = flow.review_json(request, floor_policy(app))
    _check_fits(app, review["policy"], file)
    with open_store(app, keyed=True, create_key=True) as store:
        stored, new = flow.receive(store, request, review, _now())
    for problem in flow.announce(config, stored) if new else []:
        click.echo(f"request {stored.id}: {problem}", err=True)
    if not new:
        click.echo(f"request {stored.id} was received before ({stored.status})")
        return
    click.echo(
        f"request {stored.id} received from {literal(request.model.requester.name)}; review "
        f"it: connector requests show {stored.id}"
    )
    for field, why in review["cut"].items():
        click.echo(f"  cut: {field}: {why}")


@requests.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the requests as JSON.")
@click.pass_obj
def list_requests(app: App, as_json: bool) -> None:
    """List the share requests received and where each stands (ends those whose time is over)."""
    with open_store(app, keyed=True, create_key=True) as store:
        notes = flow.expire_due(store, app.config, _now()) if app.config.model.requests else []
        rows = [_row(s) for s in store.share_requests().all()]
    for note in notes:
        click.echo(note, err=True)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No share request was received.", err=True)
    for row in rows:
        until = f"  until {row['expires_at']}" if row["expires_at"] else ""
        click.echo(
            f"{row['id']}  {row['status']}  from {literal(row['requester'])}  purpose "
            f"{row['purpose']}  fields {', '.join(row['fields'])}{until}"
        )


@requests.command()
@click.argument("request_id")
@click.option("--sample", default=3, show_default=True, help="Records shown, masked.")
@click.option("--json", "as_json", is_flag=True, help="Print the review as JSON.")
@click.pass_obj
def show(app: App, request_id: str, sample: int, as_json: bool) -> None:
    """Show request REQUEST_ID: what the floor cuts, and what the requester would receive,
    masked exactly as they would see it (a dry run on the real source: nothing is written)."""
    with open_store(app, keyed=True, create_key=True) as store:
        stored = _get(store, request_id)
        review = _row(stored) | _preview(app, store, stored, sample)
    review["cut"] = stored.review["cut"]
    review["allowed"] = stored.review["allowed"]
    review["approve_text"] = statement_text(stored.request_hash, "approve").decode()
    review["deny_text"] = statement_text(stored.request_hash, "deny").decode()
    review["revocation_text"] = flow.revocation_text(stored).decode()
    if as_json:
        emit_json(review)
        return
    _render(review)


def _render(review: dict[str, Any]) -> None:
    """The review an approver reads: every text the requester wrote shown literally."""
    click.echo(f"Request {review['id']} from {literal(review['requester'])}: {review['status']}")
    click.echo(f"  why: {literal(review['why'].strip())}")
    click.echo(f"  purpose: {review['purpose']}; duration {review['duration']}")
    click.echo(f"  delivery: {literal(_delivery(review['delivery']))}")
    click.echo(f"  hash: {review['request_hash']}")
    allowed = ", ".join(f"{f} ({o})" for f, o in review["allowed"].items()) or "nothing"
    click.echo(f"  the requester would receive: {allowed}")
    for field, why in review["cut"].items():
        click.echo(f"  cut: {field}: {why}")
    click.echo(f"  people shared: {review['counts']['shared']}")
    click.echo(f"  withheld: {review['withheld'] or 'nobody'}")
    click.echo(f"  sample ({len(review['sample'])}):")
    for record in review["sample"]:
        click.echo("    " + literal(json.dumps(record, ensure_ascii=False, sort_keys=True)))
    click.echo(
        f"  to decide remotely, sign one text with `ssh-keygen -Y sign -n {APPROVAL_NAMESPACE}`:"
    )
    click.echo("    " + review["approve_text"].replace("\n", "\\n"))


def _delivery(delivery: dict[str, Any]) -> str:
    """Where the requester's people would be written: the adapter and its settings."""
    settings = ", ".join(f"{k}={v}" for k, v in sorted((delivery.get("settings") or {}).items()))
    return f"{delivery.get('adapter')} ({settings})" if settings else str(delivery.get("adapter"))


@requests.command()
@click.argument("request_id")
@click.argument("decision", type=click.Choice(["approve", "deny"]))
@click.option("--as", "person", help="Your name as declared under approvers:.")
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Your private OpenSSH key (a passphrase is read from ${PASSPHRASE_ENV}).",
)
@click.option(
    "--statement",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A statement signed elsewhere (ssh-keygen -Y sign of the text `show` prints).",
)
@click.pass_obj
def decide(
    app: App,
    request_id: str,
    decision: Decision,
    person: str | None,
    key: Path | None,
    statement: Path | None,
) -> None:
    """Approve or deny request REQUEST_ID with a signed statement (yours, with --as and --key,
    or a remote approver's, with --statement); quorum approves it, one denial denies it."""
    config = app.config
    approval = flow.approval_of(config)
    now = _now()
    with open_store(app, keyed=True, create_key=True) as store:
        stored = _get(store, request_id)
        aset = flow.decision_set(store, stored)
        if statement is not None:
            signature = _statement(statement)
            person, _set, decision = match_statement(signature, [aset], config.model.approvers)
        elif person and key:
            signature = _sign(aset.set_hash, decision, key)
        else:
            raise click.UsageError("give --as NAME --key FILE, or --statement FILE")
        if stored.status != "received":
            raise flow.RequestRefused(
                f"request {stored.id} is {stored.status}: it can no longer be decided",
                hint="`connector requests list` shows where each request stands.",
            )
        _check_review(app, stored)
        take_statement(
            store.approvals(), aset, person=person, decision=decision, signature=signature,
            approval=approval, policy_hash=aset.policy_hash,
            approvers=config.model.approvers, now=now,
        )  # fmt: skip
        notes = flow.settle(store, config, stored, now)
    click.echo(f"{person} {decision}s request {request_id}")
    for note in notes:
        click.echo(note)


@requests.command()
@click.argument("request_id")
@click.option(
    "--statement",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The requester's signed revocation (of the text `show` prints under revocation).",
)
@click.option(
    "--why", default="revoked by the owner", show_default=True, help="Why, for the ledger."
)
@click.pass_obj
def revoke(app: App, request_id: str, statement: Path | None, why: str) -> None:
    """Revoke request REQUEST_ID: its job's next run takes back everything it shared.

    Without --statement the owner revokes; with it, the requester's signed revocation does."""
    with open_store(app, keyed=True, create_key=True) as store:
        stored = _get(store, request_id)
        if statement is not None:
            flow.verify_revocation(stored, _statement(statement))
            why = "revoked by the requester"
        notes = flow.end(store, app.config, stored, "revoked", why, _now())
    for note in notes:
        click.echo(note)


# -- helpers -------------------------------------------------------------------------------


def _sign(set_digest: str, decision: Decision, key: Path) -> str:
    from connector_core import signing

    passphrase = os.environ.get(PASSPHRASE_ENV)
    return signing.sign(
        statement_text(set_digest, decision),
        key,
        signing.NAMESPACE_APPROVAL,
        passphrase.encode() if passphrase else None,
    )


def floor_policy(app: App) -> Any:
    """The network floor as loaded for a run (None: connector.yaml names none)."""
    from connector_core.sync.job import load_job_policy

    floor = app.config.model.network.floor
    if floor is None:
        return None
    return load_job_policy(app.config, floor, PolicyEnv.from_app(app).masks)


def _statement(path: Path) -> str:
    """The text of a signed statement file; a file that is not text is refused by name."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        reason = "it is not UTF-8 text"
    except OSError as exc:
        reason = f"it cannot be read: {exc.strerror}"
    raise flow.RequestRefused(
        f"{path}: not a signed statement ({reason})",
        hint="Give the file `ssh-keygen -Y sign` wrote (it begins with -----BEGIN SSH "
        "SIGNATURE-----).",
    )


def _revocation(file: Path) -> tuple[str, str] | None:
    """(request id, signature) of a revocation document; None for anything else."""
    import yaml

    try:
        body = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None  # load_request reports it with its line
    if not isinstance(body, dict) or body.get("kind") != "share-request-revocation":
        return None
    request, signature = body.get("request"), body.get("signature")
    if not isinstance(request, str) or not isinstance(signature, str):
        raise flow.RequestRefused(
            f"{file}: a revocation names its request (request: ID) and carries the "
            "requester's signature (signature: |)",
            hint="docs/request-format.md, 'After sending it', shows one.",
        )
    return request, signature


def _check_review(app: App, stored: StoredRequest) -> None:
    """Refuse to decide a request whose review the network floor has changed since."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "request.json"
        document = json.dumps(stored.document)
        write_output(path, lambda out: out.write(document))
        request = load_request(path, purposes=list(app.config.model.consent.purposes))
    if flow.review_json(request, floor_policy(app))["set_hash"] != stored.request_hash:
        raise flow.RequestRefused(
            f"the network floor changed since request {stored.id} was received, so what it "
            "would be given changed; its statements no longer fit",
            hint="Receive the request again (`connector requests receive FILE`): it is "
            "reviewed under the floor as it is now, and decided anew.",
        )


def _get(store: StateStore, request_id: str) -> StoredRequest:
    stored = store.share_requests().get(request_id)
    if stored is None:
        raise ConfigError(
            f"no share request {request_id!r} was received",
            hint="`connector requests list` lists them; `connector requests receive FILE` "
            "takes a new one.",
        )
    return stored


def _row(stored: StoredRequest) -> dict[str, Any]:
    doc = stored.document
    return {
        "id": stored.id,
        "status": stored.status,
        "requester": doc["requester"].get("organization") or doc["requester"]["name"],
        "purpose": doc["purpose"],
        "fields": list(stored.review["allowed"]),
        "duration": doc["duration"],
        "why": doc["why"],
        "delivery": doc["delivery"],
        "request_hash": stored.request_hash,
        "received_at": stored.received_at.isoformat(timespec="seconds"),
        "expires_at": stored.expires_at and stored.expires_at.isoformat(timespec="seconds"),
        "job": stored.job,
        "note": stored.note,
    }


def _check_fits(app: App, policy: dict[str, Any], file: Path) -> None:
    """Refuse a request whose policy does not compile under the floor (its scope tests a
    field the floor forbids, say): said at receive, naming the request, not a file made
    for it."""
    from connector_core.errors import ConfigValidationError
    from connector_core.policy.compiler import compile_policy
    from connector_core.sync.job import load_job_policy

    env = PolicyEnv.from_app(app)
    with tempfile.TemporaryDirectory() as tmp:
        path = _policy_file(Path(tmp), policy)
        try:
            loaded = load_job_policy(app.config, path, env.masks)
            compile_policy(loaded, masks=env.masks, context=env.context())
        except ConfigValidationError as err:
            reasons = "; ".join(p.message for p in err.problems) or str(err)
            raise flow.RequestRefused(
                f"{file}: the request does not fit this network's floor: {reasons}",
                hint="The requester sends a request whose fields and scope the floor allows; "
                "nothing was stored.",
            ) from None


def _policy_file(folder: Path, policy: dict[str, Any]) -> Path:
    """`policy` written as policy.yaml in `folder` (a temporary one)."""
    import yaml

    text = yaml.safe_dump(policy, sort_keys=False)
    write_output(folder / "policy.yaml", lambda out: out.write(text))
    return folder / "policy.yaml"


def _preview(app: App, store: StateStore, stored: StoredRequest, sample: int) -> dict[str, Any]:
    """A dry run of the job the request would become: counts, withheld, a masked sample."""
    from connector_core.config import JobConfig
    from connector_core.sync.job import load_job
    from connector_core.sync.runner import run_job

    config = app.config
    source = flow.settings_of(config).source
    env = PolicyEnv.from_app(app)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        _policy_file(base, stored.review["policy"])
        name = f"{stored.job}-preview"
        job = JobConfig.model_validate(
            {"source": source, "target": source, "policy": "policy.yaml"},
            context={"base_dir": base},
        )
        model = config.model.model_copy(update={"jobs": {**config.model.jobs, name: job}})
        preview = dataclasses.replace(config, model=model)
        loaded = load_job(preview, name, masks=env.masks, context=env.context())
        try:
            result = run_job(loaded, store, dry_run=True, reconcile=True)
        finally:
            loaded.close()
    shared = [c for c in result.planned if c.projection is not None]
    return {
        "counts": {"read": result.counts.read, "shared": len(shared)},
        "withheld": dict(result.counts.withheld),
        "sample": [dict(c.projection or {}) for c in shared[: max(sample, 0)]],
    }
