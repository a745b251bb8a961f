"""Share requests on the owner's side: received, decided by N of M, shared, taken back.

A request (:mod:`connector_core.policy.share_requests`) whose signature verifies is *received*:
stored with what the network floor cut from it, and given an approval set (job
``request:<id>``, no members) bound to :func:`bound_hash` — the request's canonical bytes and
the policy it would become. The owner's approvers (connector.yaml ``requests: approval:``)
decide it with signed statements exactly as they decide held change sets
(:func:`connector_core.sync.approvals.take_statement` and ``tally``: distinct people,
escalation to the fallback approvers, expiry).

An approved request is *materialised* as two files in the requests folder (``requests:
folder:``, default ``requests/`` beside connector.yaml): ``<id>.policy.yaml``, the policy it
becomes (it narrows the floor), and ``<id>.job.yaml``, the requester's delivery connection and
the job ``request-<id>`` that connector.yaml's loader adds to its jobs. At ``expires_at``, or
when either side revokes it, the policy file is rewritten to share nobody and the job may take
back everything at once (``max_delete: 100%``): its next run deletes every record it wrote,
crash-safe like any run, and once the job holds nothing the request is *ended* and the
requester told. Every step is a ledger row (job ``request-<id>``, no record, no value).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from connector_core.errors import ConfigError
from connector_core.files import write_output
from connector_core.policy.share_requests import (
    RequestReview,
    ShareRequest,
    policy_data,
    review_request,
    widened,
)
from connector_core.sync.approvals import approval_entries, people, tally
from connector_core.sync.keys import canonical_json
from connector_core.sync.request_book import StoredRequest
from connector_core.yaml_errors import first_error

if TYPE_CHECKING:
    from connector_core.config import Config, RequestsConfig
    from connector_core.policy.models import ApprovalModel, Policy
    from connector_core.sync.approval_book import ApprovalSet
    from connector_core.sync.state import StateStore

SET_JOB = "request:"  # an approval set of job request:<id> decides request <id>
HEADER = (
    "# Written by `connector {command}` for share request {id}; do not edit by hand.\n"
    "# Revoke with `connector requests revoke {id}` (docs/approvals.md, 'Share requests').\n"
)


class RequestRefused(ConfigError):
    """A request or revocation that cannot be taken: nothing is stored."""


def request_approval(raw: Mapping[str, Any]) -> ApprovalModel:
    """connector.yaml's ``requests: approval:`` as an approval block (every request waits)."""
    from pydantic import ValidationError

    from connector_core.policy.models import ApprovalModel

    try:
        return ApprovalModel.model_validate({"required_for": ["all"], **raw})
    except ValidationError as exc:
        raise ConfigError(
            f"connector.yaml requests.approval.{first_error(exc)}",
            hint="Write it like a policy's approval: block (docs/approvals.md).",
        ) from None


def approval_of(config: Config) -> ApprovalModel:
    """connector.yaml's ``requests: approval:``, checked: every approver and fallback approver
    is a person or group declared under ``approvers:`` (else an error naming the line)."""
    from connector_core.errors import ConfigValidationError

    approval = request_approval(settings_of(config).approval)
    declared = config.model.approvers
    groups = {g for body in declared.values() for g in body.groups}
    problems = [
        config.document.problem(
            ("requests", "approval", key, index),
            f"requests.approval.{key}: {name!r} is not a person or group declared under "
            f"approvers: (declared: {', '.join(sorted({*declared, *groups})) or 'none yet'})",
        )
        for key in ("approvers", "fallback_approvers")
        for index, name in enumerate(getattr(approval, key))
        if name not in declared and name not in groups
    ]
    if problems:
        raise ConfigValidationError(
            problems,
            hint="Declare each approver under approvers: with their organization, email and "
            "OpenSSH public key (docs/approvals.md), or fix the name.",
        )
    return approval


def bound_hash(request: ShareRequest, review: RequestReview) -> tuple[str, str]:
    """(the hash approvers sign, the hash of the policy the request would become)."""
    policy = hashlib.sha256(canonical_json(policy_data(request, review)).encode()).hexdigest()
    body = {
        "v": 1,
        "kind": "share-request",
        "request": hashlib.sha256(request.canonical).hexdigest(),
        "policy": policy,
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest(), policy


def review_json(request: ShareRequest, floor: Policy | None) -> dict[str, Any]:
    """What the floor does to `request`, and the policy it would become, as stored."""
    review = review_request(request, floor)
    set_digest, policy_hash = bound_hash(request, review)
    return {
        **dataclasses.asdict(review),
        "policy": policy_data(request, review),
        "policy_hash": policy_hash,
        "set_hash": set_digest,
    }


def receive(
    store: StateStore, request: ShareRequest, review: Mapping[str, Any], now: dt.datetime
) -> tuple[StoredRequest, bool]:
    """Store a verified request with a waiting approval set; (the stored request, whether it
    is new). The same document received twice is one request.

    Raises:
        RequestRefused: another document under the same id was received before.
    """
    book = store.share_requests()
    digest = review["set_hash"]
    known = book.get(request.model.id)
    if known is not None:
        if known.request_hash == digest:
            return known, False
        if known.status == "received" and known.document == _document(request):
            return _review_again(store, known, review, now), True
        raise RequestRefused(
            f"a different request named {request.model.id!r} was received on "
            f"{known.received_at:%Y-%m-%d} ({known.status})",
            hint="Ask the requester to give a changed request a new id.",
        )
    set_id = store.approvals().create(
        job=SET_JOB + request.model.id,
        policy=f"request-{request.model.id}",
        policy_hash=review["policy_hash"],
        set_hash=digest,
        members=[],
        summary={"changes": 0, "fields": dict(review["allowed"]), "request": request.model.id},
        now=now,
    )
    stored = StoredRequest(
        id=request.model.id,
        request_hash=digest,
        status="received",
        document=_document(request),
        review=dict(review),
        set_id=set_id,
        received_at=now,
        decided_at=None,
        expires_at=None,
        ended_at=None,
        note=None,
    )
    book.add(stored)
    reason = f"share request {stored.id} received for purpose {request.model.purpose}"
    if review["cut"]:
        reason += f"; cut by the floor: {', '.join(sorted(review['cut']))}"
    store.record_events([_event(stored, "request-received", reason, now)])
    return stored, True


def _review_again(
    store: StateStore, known: StoredRequest, review: Mapping[str, Any], now: dt.datetime
) -> StoredRequest:
    """The same request under a changed floor: its old approval set lapses, a new one waits."""
    note = "lapsed: the network floor changed; the request is reviewed again"
    if known.set_id is not None:
        store.approvals().update(known.set_id, status="lapsed", decided_at=now, note=note)
    set_id = store.approvals().create(
        job=SET_JOB + known.id,
        policy=known.job,
        policy_hash=review["policy_hash"],
        set_hash=review["set_hash"],
        members=[],
        summary={"changes": 0, "fields": dict(review["allowed"]), "request": known.id},
        now=now,
    )
    values = {"request_hash": review["set_hash"], "review": dict(review), "set_id": set_id}
    store.share_requests().update(known.id, **values)
    again = dataclasses.replace(known, **values)
    reason = f"share request {known.id} reviewed again: the network floor changed"
    store.record_events([_event(again, "request-received", reason, now)])
    return again


def _document(request: ShareRequest) -> dict[str, Any]:
    import json

    return dict(json.loads(request.canonical)) | {"signature": request.signature}


def decision_set(store: StateStore, stored: StoredRequest) -> ApprovalSet:
    """The approval set request `stored` is decided in."""
    aset = store.approvals().get(stored.set_id or -1)
    if aset is None:
        raise ConfigError(f"request {stored.id} has no approval set", hint="Receive it again.")
    return aset


def settle(store: StateStore, config: Config, stored: StoredRequest, now: dt.datetime) -> list[str]:
    """Act on request `stored`'s statements and times: approve (and materialise), deny,
    lapse (nobody decided in time), or end (expired). Returns what happened, for people."""
    if stored.status == "approved" and stored.expires_at and now >= stored.expires_at:
        return end(store, config, stored, "expired", "its duration is over", now)
    if stored.status != "received":
        return []
    approval = approval_of(config)
    aset = decision_set(store, stored)
    counted = tally(
        aset, store.approvals().statements(aset.id), approval, config.model.approvers, now
    )
    if counted.denials:
        names = ", ".join(sorted({s.person for s in counted.denials}))
        return _close(store, stored, aset, "denied", f"denied by {names}", now, counted.denials)
    if counted.approved:
        expires = now + _duration(stored)
        materialise(config, stored, expires)
        store.approvals().update(aset.id, status="released", decided_at=now)
        store.share_requests().update(
            stored.id, status="approved", decided_at=now, expires_at=expires
        )
        names = ", ".join(sorted({s.person for s in counted.approvals}))
        note = f"approved by {names}; job {stored.job} shares until {expires:%Y-%m-%d %H:%M} UTC"
        entries = approval_entries(aset, counted.approvals)
        store.record_events(
            [_event(stored, "request-approved", note, now, entries, _fields(stored))]
        )
        return [f"request {stored.id}: {note}"]
    if now - aset.created_at >= approval.expiry():
        note = f"nobody decided within {approval.expire_after}, so it is denied"
        return _close(store, stored, aset, "lapsed", note, now, [])
    notes: list[str] = []
    if counted.escalated and aset.escalated_at is None:
        store.approvals().update(aset.id, escalated_at=now)
        notes.append(
            f"request {stored.id}: no quorum after {approval.escalate_after}; the fallback "
            f"approvers ({', '.join(approval.fallback_approvers)}) may decide now"
        )
        fallback = approval.fallback_approvers
        problems = tell_approvers(config, stored, "escalated", fallback)
        notes += [f"request {stored.id}: {p}" for p in problems]
    have = len({s.person for s in counted.approvals})
    return [*notes, f"request {stored.id}: waits for approval ({have} of {approval.quorum})"]


def tell_approvers(
    config: Config, stored: StoredRequest, kind: str, names: Sequence[str]
) -> list[str]:
    """Tell approvers (by name or group) that request `stored` waits for them (no personal
    data: the request's id, its field names, the command that reviews it)."""
    if config.model.notifications is None:
        return []
    return _notify(config, stored, kind, None, tuple(sorted(people(names, config.model.approvers))))


def announce(config: Config, stored: StoredRequest) -> list[str]:
    """Tell the request's approvers that a newly received request waits for them."""
    return tell_approvers(config, stored, "waiting", approval_of(config).approvers)


def _close(
    store: StateStore,
    stored: StoredRequest,
    aset: ApprovalSet,
    status: str,
    note: str,
    now: dt.datetime,
    statements: Sequence[Any],
) -> list[str]:
    store.approvals().update(
        aset.id, status="denied" if status == "denied" else "expired", decided_at=now, note=note
    )
    store.share_requests().update(stored.id, status=status, decided_at=now, note=note)
    entries = approval_entries(aset, statements)
    store.record_events([_event(stored, f"request-{status}", note, now, entries)])
    return [f"request {stored.id}: {note}"]


def _duration(stored: StoredRequest) -> dt.timedelta:
    from connector_core.policy.models import parse_duration

    return parse_duration(str(stored.document["duration"]))


def settings_of(config: Config) -> RequestsConfig:
    """connector.yaml's ``requests:`` section; a ConfigError saying how to add one."""
    if config.model.requests is None:
        raise ConfigError(
            f"{config.path} has no requests: section, so share requests cannot be decided here",
            hint="Add requests: with source: (the connection requests read from) and "
            "approval: (who decides) to connector.yaml (docs/approvals.md, 'Share requests').",
        )
    return config.model.requests


def folder(config: Config) -> Path:
    """Where approved requests' policies and jobs are written."""
    return config.base_dir / settings_of(config).folder


def check_delivery(config: Config, request: ShareRequest) -> None:
    """Refuse a request whose delivery would write where no target may: a source, another
    target, the connector's own files, a link (the rules of a hand-written target's path,
    :func:`~connector_core.local_paths.target_problems`), as the job file it becomes would
    be read (paths relative to the requests folder). The loader holds the job file to the
    same rules."""
    from connector_core.local_paths import known_places, target_problems

    delivery = request.model.delivery
    cls = config.installed[delivery.adapter]
    from pydantic import ValidationError

    try:
        settings = cls.settings_model.model_validate(
            delivery.settings, context={"base_dir": folder(config)}
        )
    except ValidationError as err:
        raise RequestRefused(
            f"{request.path}: delivery.settings.{first_error(err)}",
            hint="The requester sends a request whose delivery the adapter accepts.",
        ) from None
    refused = target_problems(
        settings, known_places(config.document, config.settings, config.model)
    )
    if refused:
        key, message = refused[0]
        raise RequestRefused(
            f"{request.path}: delivery.settings.{key}: {message}",
            hint="A request delivers to a place of its own; the requester sends one that "
            "names another (nothing was stored).",
        )


def materialise(config: Config, stored: StoredRequest, expires: dt.datetime) -> None:
    """Write request `stored`'s policy and job files (the loader adds the job)."""
    where = folder(config)
    where.mkdir(parents=True, exist_ok=True)
    _write_yaml(where / f"{stored.id}.policy.yaml", stored, stored.review["policy"])
    job = {
        "request": stored.id,
        "expires": expires.isoformat(timespec="seconds"),
        "connection": stored.document["delivery"],
        "job": {
            "source": settings_of(config).source,
            "target": stored.job,
            "policy": f"{stored.id}.policy.yaml",
            "schedule": "0 * * * *",  # hourly for `run --due`: an ended request's data goes soon
        },
    }
    _write_yaml(where / f"{stored.id}.job.yaml", stored, job)


def _write_yaml(path: Path, stored: StoredRequest, body: Mapping[str, Any]) -> None:
    text = HEADER.format(command="requests decide", id=stored.id)
    text += yaml.safe_dump(dict(body), sort_keys=False, allow_unicode=True)
    write_output(path, lambda out: out.write(text))


def end(
    store: StateStore, config: Config, stored: StoredRequest, status: str, why: str,
    now: dt.datetime,
) -> list[str]:  # fmt: skip
    """Expire or revoke request `stored`: its policy shares nobody from now on, and its job's
    next run takes back everything the request shared."""
    if stored.status not in ("approved", "received"):
        raise RequestRefused(
            f"request {stored.id} is {stored.status}: there is nothing to end",
            hint="`connector requests list` shows every request and where it stands.",
        )
    note = f"{status}: {why}; the next run of {stored.job} takes back everything it shared"
    if stored.status == "received":  # never approved: nothing was shared
        note = f"{status}: {why}; nothing was shared"
        status_now = "ended"
    else:
        status_now = status
        _rewrite_ended(config, stored, status, now)
    store.share_requests().update(stored.id, status=status_now, ended_at=now, note=note)
    if stored.set_id is not None and stored.status == "received":
        store.approvals().update(stored.set_id, status="expired", decided_at=now, note=note)
    store.record_events([_event(stored, f"request-{status}", note, now)])
    kind = "expired" if status == "expired" else "decided"
    problems = _tell_requester(config, stored, kind, status)
    return [f"request {stored.id}: {note}", *(f"request {stored.id}: {p}" for p in problems)]


def _rewrite_ended(config: Config, stored: StoredRequest, status: str, now: dt.datetime) -> None:
    where = folder(config)
    policy = dict(stored.review["policy"])
    policy["description"] = (
        f"Share request {stored.id} {status} on {now:%Y-%m-%d}: it shares nobody, and its job "
        "takes back everything it shared"
    )
    policy["rules"] = []
    _write_yaml(where / f"{stored.id}.policy.yaml", stored, policy)
    job_path = where / f"{stored.id}.job.yaml"
    if job_path.exists():
        body = yaml.safe_load(job_path.read_text(encoding="utf-8"))
        body["job"]["options"] = {"max_delete": "100%"}  # a take-back is never held back
        _write_yaml(job_path, stored, body)


def end_widened(
    store: StateStore, config: Config, floor: Policy | None, now: dt.datetime
) -> list[str]:
    """End every approved request that today's floor would send less masked than it was
    approved (:func:`~connector_core.policy.share_requests.widened`): its approvers saw
    and signed the masks of then. Ended as revoked, its job takes back everything it
    shared in its next run (never sending a field unmasked), and the requester is told."""
    messages: list[str] = []
    for stored in store.share_requests().all(("approved",)):
        changes = widened(stored.review["allowed"], floor)
        if changes:
            why = f"the network floor changed since it was approved ({'; '.join(changes)})"
            messages += end(store, config, stored, "revoked", why, now)
    return messages


def expire_due(store: StateStore, config: Config, now: dt.datetime) -> list[str]:
    """End every approved request whose time is over, and lapse undecided ones."""
    messages: list[str] = []
    for stored in store.share_requests().all(("approved", "received")):
        messages += settle(store, config, stored, now)
    return [m for m in messages if "waits for approval" not in m]


def after_run(store: StateStore, config: Config, job: str, now: dt.datetime) -> list[str]:
    """After a run of `job`: a request taking back whose job holds nothing more is ended,
    and its requester told."""
    stored = next(
        (s for s in store.share_requests().all(("expired", "revoked")) if s.job == job), None
    )
    if stored is None or store.mapped_count(job) > 0:
        return []
    note = f"everything shared under request {stored.id} was taken back ({stored.status})"
    store.share_requests().update(stored.id, status="ended", note=note)
    store.record_events([_event(stored, "request-taken-back", note, now)])
    problems = _tell_requester(config, stored, "decided", "taken_back")
    return [f"request {stored.id}: {note}", *(f"request {stored.id}: {p}" for p in problems)]


def revocation_text(stored: StoredRequest) -> bytes:
    """What a requester signs (namespace commons-connector-request) to revoke a request."""
    return f"commons-connector request revocation v1\nrequest: {stored.request_hash}\n".encode()


def verify_revocation(stored: StoredRequest, signature: str) -> None:
    """Check that the requester's key signed the revocation of exactly this request.

    Raises:
        RequestRefused: another key, another request, or not a revocation.
    """
    from connector_core import signing

    key = signing.load_public_key(str(stored.document["requester"]["public_key"]))
    try:
        signing.verify(revocation_text(stored), signature, key, signing.NAMESPACE_REQUEST)
    except signing.SignatureError as exc:
        raise RequestRefused(
            f"the revocation of request {stored.id} does not verify: {exc}",
            hint="The requester signs the text `connector requests show ID` prints under "
            "'revocation', with the key named in the request.",
        ) from None


def _fields(stored: StoredRequest) -> dict[str, str]:
    return {str(k): str(v) for k, v in stored.review.get("allowed", {}).items()}


def _event(
    stored: StoredRequest,
    action: str,
    reason: str,
    now: dt.datetime,
    approvals: Sequence[Mapping[str, Any]] = (),
    fields: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ledger row about request `stored` (no record, no value)."""
    return {
        "at": now,
        "job": stored.job,
        "target": stored.job,
        "record_key": "",
        "source_id": "",
        "action": action,
        "fields": dict(fields or {}),
        "policy": stored.job,
        "policy_hash": str(stored.review.get("policy_hash", "")),
        "consent_basis": {},
        "approvals": [dict(a) for a in approvals],
        "reason": reason,
    }


def _tell_requester(config: Config, stored: StoredRequest, kind: str, decision: str) -> list[str]:
    """Tell the requester (their contact, if it is an email address) that the share ended;
    no personal data: the request's id, its field names and what happened."""
    if config.model.notifications is None:
        return []
    contact = str(stored.document["requester"]["contact"])
    return _notify(config, stored, kind, decision, ("requester",), {"requester": contact})


def _notify(
    config: Config,
    stored: StoredRequest,
    kind: str,
    decision: str | None,
    to: tuple[str, ...],
    emails: Mapping[str, str] | None = None,
) -> list[str]:
    from connector_core.notify import Notice, send
    from connector_core.records import is_known_field

    try:
        notice = Notice(
            kind=kind,  # type: ignore[arg-type]
            job=stored.job,
            policy=stored.job,
            recipient=stored.job,
            set_id=str(stored.set_id or 0),
            counts={"requests": 1},
            fields=tuple(f for f in stored.review.get("allowed", {}) if is_known_field(f)),
            review=f"connector requests show {stored.id}",
            to=to,
            decision=decision,
            about="request",
        )
    except ValueError as exc:
        return [f"notice not sent: {exc}"]
    return send(notice, config, emails=emails)
