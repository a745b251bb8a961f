"""Share requests: a group asks another group for data, in a signed document.

A request (YAML or JSON, see docs/request-format.md) says who asks (name, contact, public
key), the consent purpose it relies on, the fields and the scope it wants (conditions in the
policy language), where the data should go (a connection of the requester's), for how long,
and why. :func:`load_request` checks it and reports every problem as ``file:line:col``;
:func:`verify_request` checks the requester's signature (SSHSIG, namespace
``commons-connector-request``) over the request's canonical form, so the document may travel
by any channel; :func:`review_request` holds it against the network floor and says what
could be shared and what is cut.

The canonical form is the document without its ``signature`` key, written as JSON with
sorted keys, no whitespace and UTF-8 (dates as ISO text): the same for the YAML and the JSON
spelling of a request, and untouched by comments or indentation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector_core.config import ConnectionConfig
from connector_core.errors import ConfigValidationError, Problem
from connector_core.policy.compiler import policy_outcome
from connector_core.policy.conditions import ConditionParser
from connector_core.policy.models import NAME_RE, Policy, parse_duration
from connector_core.query import Condition
from connector_core.records import FIELDS, is_extra, is_known_field
from connector_core.signing import (
    NAMESPACE_REQUEST,
    PublicKey,
    SignatureError,
    load_public_key,
    sign,
    signer,
    verify,
)
from connector_core.yaml_errors import LocatedDocument, did_you_mean, load_yaml, validate

KIND = "share-request"
PURPOSE_RE = r"^[a-z][a-z0-9_]*$"
HINT = "Fix the lines above; docs/request-format.md describes every key."
SIGN_HINT = (
    "The requester signs the request with `connector`'s sign_request, or prints its canonical "
    "form and signs that with `ssh-keygen -Y sign -n commons-connector-request`."
)


class RequestValidationError(ConfigValidationError):
    """A share request document has problems; ``problems`` holds them in file order."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Requester(_Block):
    """Who asks: the organization or person, how to reach them, and their public key."""

    name: str = Field(min_length=1, description="Who asks, e.g. Sunrise Housing Co-op")
    organization: str = Field("", description="Their organization, if the name is a person's")
    contact: str = Field(
        min_length=3, description="An email address or URL where the requester answers"
    )
    public_key: str = Field(
        description="The requester's OpenSSH public key line (ssh-ed25519 AAAA... comment); "
        "the request is signed with its private key"
    )

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        try:
            load_public_key(value)
        except SignatureError as err:
            raise ValueError(str(err)) from None
        return value


class ShareRequestFile(_Block):
    """The structure of a share request document."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Commons Connector share request")

    version: Literal[1] = Field(description="Format version of this document; currently 1")
    kind: Literal["share-request"] = Field(description="Always share-request")
    id: str = Field(pattern=NAME_RE, description="The request's name (lowercase, - or _)")
    network: str = Field(min_length=1, description="The network asked (its network: name:)")
    requester: Requester
    purpose: str = Field(
        pattern=PURPOSE_RE, description="The network's consent purpose the request relies on"
    )
    fields: list[str] = Field(min_length=1, description="Canonical fields wanted")
    scope: dict[str, Any] | None = Field(
        None, description="Which people: a condition in the policy language (default: all)"
    )
    delivery: ConnectionConfig = Field(
        description="Where the data goes: a connection of the requester's (adapter, settings)"
    )
    duration: str = Field(description="How long the share lasts, e.g. 90d or 12w")
    why: str = Field(min_length=1, description="Why the requester needs it, for the approvers")
    created: dt.date | None = Field(None, description="When the request was written")
    signature: str | None = Field(
        None, description="The requester's SSH signature over the canonical form"
    )

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


@dataclasses.dataclass(frozen=True)
class ShareRequest:
    """A checked request: its model, parsed scope, key, duration and canonical bytes."""

    path: Path
    model: ShareRequestFile
    scope: Condition | None
    key: PublicKey
    duration: dt.timedelta
    canonical: bytes

    @property
    def signature(self) -> str | None:
        """The requester's armored signature, if the document carries one."""
        return self.model.signature


@dataclasses.dataclass(frozen=True)
class RequestReview:
    """A request held against the floor: fields it may get (with their outcome), fields cut
    (with why), the consent every shared person needs, and the floor's exclusions."""

    allowed: dict[str, str]
    cut: dict[str, str]
    require_consent: tuple[str, ...]
    floor_forbids: tuple[str, ...]


def canonical(data: Mapping[str, Any]) -> bytes:
    """The bytes a request's signature covers: the document less ``signature``, as JSON with
    sorted keys and no whitespace, UTF-8, dates as ISO text."""
    body = {key: value for key, value in data.items() if key != "signature"}
    return json.dumps(
        _plain(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)  # 2.0 in YAML and 2 in JSON are one number
    return value


def load_request(
    path: Path,
    *,
    purposes: Collection[str] | None = None,
    extra_fields: Collection[str] | None = None,
    adapters: Collection[str] | None = None,
) -> ShareRequest:
    """Load and check a request document (YAML or JSON); every problem at once.

    `purposes` are the network's consent purposes and `adapters` the installed adapters' names
    (None: not checked); `extra_fields` the ``extra.`` fields the network maps (None: any).

    Raises:
        RequestValidationError: every problem, as ``file:line:col: message``.
    """
    try:
        doc = load_yaml(path)
    except ConfigValidationError as err:
        raise RequestValidationError(err.problems, hint=err.hint) from None
    problems: list[Problem] = []
    model: ShareRequestFile | None = None
    try:
        model = validate(doc, ShareRequestFile)
    except ConfigValidationError as err:
        problems += err.problems
    problems += _check_fields(doc, extra_fields)
    problems += _check_names(doc, purposes, adapters)
    scope = _scope(doc, purposes, extra_fields, problems)
    if problems or model is None:
        raise RequestValidationError(problems, hint=HINT)
    return ShareRequest(
        path=path,
        model=model,
        scope=scope,
        key=load_public_key(model.requester.public_key),
        duration=parse_duration(model.duration),
        canonical=canonical(doc.data),
    )


def _check_fields(doc: LocatedDocument, extra_fields: Collection[str] | None) -> list[Problem]:
    raw = doc.get(("fields",))
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, name in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(name, str):
            continue  # the structure check reports it
        if name in seen:
            problems.append(doc.problem(("fields", i), f"fields: {name!r} is listed twice"))
        seen.add(name)
        unknown_extra = is_extra(name) and extra_fields is not None and name not in extra_fields
        if not is_known_field(name) or unknown_extra:
            suggestion = did_you_mean(name, FIELDS) or (
                "; use a canonical field (docs/policies.md) or extra.<adapter>.<name>"
            )
            problems.append(
                doc.problem(("fields", i), f"fields: {name!r} is not a field{suggestion}")
            )
    return problems


def _check_names(
    doc: LocatedDocument, purposes: Collection[str] | None, adapters: Collection[str] | None
) -> list[Problem]:
    problems = []
    purpose = doc.get(("purpose",))
    if purposes is not None and isinstance(purpose, str) and purpose not in purposes:
        known = sorted(purposes)
        suggestion = did_you_mean(purpose, known) or f"; its purposes: {', '.join(known)}"
        problems.append(
            doc.problem(
                ("purpose",), f"purpose: {purpose!r} is not a purpose of this network{suggestion}"
            )
        )
    adapter = doc.get(("delivery", "adapter"))
    if adapters is not None and isinstance(adapter, str) and adapter not in adapters:
        suggestion = (
            did_you_mean(adapter, adapters) or f"; installed: {', '.join(sorted(adapters))}"
        )
        problems.append(
            doc.problem(
                ("delivery", "adapter"),
                f"delivery.adapter: no adapter {adapter!r} is installed here{suggestion}",
            )
        )
    return problems


def _scope(
    doc: LocatedDocument,
    purposes: Collection[str] | None,
    extra_fields: Collection[str] | None,
    problems: list[Problem],
) -> Condition | None:
    raw = doc.get(("scope",))
    if not isinstance(raw, dict):
        return None  # absent (everyone) or reported by the structure check
    parser = ConditionParser(doc, purposes=purposes, extra_fields=extra_fields)
    condition = parser.parse(raw, ("scope",), rule="scope")
    problems += parser.problems
    return condition


def verify_request(request: ShareRequest) -> PublicKey:
    """Check that the requester's key signed exactly this request; return that key.

    Raises:
        SignatureError: unsigned, signed by another key, altered, or not a request signature.
    """
    if request.signature is None:
        raise SignatureError(f"{request.path}: the request is not signed", hint=SIGN_HINT)
    verify(request.canonical, request.signature, request.key, NAMESPACE_REQUEST)
    return request.key


def sign_request(request: ShareRequest, private_key: Path, passphrase: bytes | None = None) -> str:
    """The requester's signature over `request` (put it under ``signature:``)."""
    signature = sign(request.canonical, private_key, NAMESPACE_REQUEST, passphrase)
    if signer(signature) != request.key:
        raise SignatureError(
            f"the private key {private_key} does not belong to the request's "
            f"requester.public_key ({request.key.fingerprint})",
            hint="Sign with the key whose public half the request names, or change the key.",
        )
    return signature


def review_request(request: ShareRequest, floor: Policy | None) -> RequestReview:
    """What the network floor (and the policies it narrows) lets this request have.

    A field the floor forbids, or does not share at all (default deny), is cut; a field it
    masks is allowed masked. Without a floor nothing is cut here: the owner's review decides.
    """
    chain = floor.chain() if floor is not None else []
    allowed: dict[str, str] = {}
    cut: dict[str, str] = {}
    for field in request.model.fields:
        verdict = _field_verdict(chain, field)
        if verdict[0] == "cut":
            cut[field] = verdict[1]
        else:
            allowed[field] = verdict[1]
    gates = [request.model.purpose]
    gates += [p for policy in chain for p in policy.require_consent if p not in gates]
    forbids = tuple(
        f"{policy.name}: {rule.name}"
        for policy in chain
        for rule in policy.rules
        if rule.kind == "forbid"
    )
    return RequestReview(allowed, cut, tuple(gates), forbids)


def _field_verdict(chain: list[Policy], field: str) -> tuple[Literal["cut", "ok"], str]:
    masks: list[str] = []
    for policy in chain:
        source = policy_outcome(policy, field)
        outcome = source.outcome
        where = (
            f"{policy.path.name}:{outcome.line}" if outcome and outcome.line else policy.path.name
        )
        if outcome is None or outcome.kind == "absent":
            return "cut", f"the floor policy {policy.name!r} does not share it ({policy.path.name})"
        if outcome.kind == "forbid":
            return "cut", f"the floor policy {policy.name!r} forbids it ({where})"
        if outcome.kind == "mask":
            masks.append(outcome.label().removeprefix("mask:"))
    return "ok", ("mask:" + "+".join(masks)) if masks else "show"


def widened(allowed: Mapping[str, str], floor: Policy | None) -> list[str]:
    """The approved fields (`allowed`: field -> outcome label, as reviewed) that today's
    `floor` would send less masked than approved (``email: approved mask:hash, now show``).
    A field it now cuts, or masks with more, is not widened: the floor applies anyway."""
    chain = floor.chain() if floor is not None else []
    found = []
    for field, approved in sorted(allowed.items()):
        verdict, now = _field_verdict(chain, field)
        if verdict == "ok" and not _masks(now) >= _masks(approved):
            found.append(f"{field}: approved {approved}, now {now}")
    return found


def _masks(label: str) -> set[str]:
    return set(label.removeprefix("mask:").split("+")) if label.startswith("mask:") else set()


def policy_data(request: ShareRequest, review: RequestReview) -> dict[str, Any]:
    """The policy an approved request becomes: it narrows the floor, shares the allowed
    fields (the floor's masks still apply) of the people in scope who gave the purpose."""
    rule: dict[str, Any] = {
        "allow": f"share request {request.model.id}",
        "description": f"Requested by {request.model.requester.name}: {request.model.why}",
    }
    if request.model.scope is not None:
        rule["when"] = request.model.scope
    return {
        "policy": f"request-{request.model.id}",
        "description": f"Share request {request.model.id} from {request.model.requester.name}",
        "require_consent": [request.model.purpose],
        "rules": [rule],
        "fields": dict.fromkeys(review.allowed, "show"),
    }


def request_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a share request document."""
    schema = ShareRequestFile.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "description": "A signed request for data from a Commons Connector network "
        "(docs/request-format.md).",
    }
