"""Cedar (cedarpy, the Rust evaluator): policy (a) as Cedar policies, decided in batches.

Contacts are Cedar entities (``Contact::"id"``) carrying the attributes the decision reads.
Per batch, ``is_authorized_batch`` first takes the row decisions (action ``share``), then one
request per field (action ``read_<field>``) for the shared contacts; the permitting policy's
``@id`` annotation names the field's outcome (``show`` or a mask).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from bench.peers import ASKED_FIELDS, RECIPIENT, Peer, PeerUnavailable, Plan, Record

POLICIES = """
@id("share:northern supporters")
permit (
    principal == Recipient::"organizers-north",
    action == Action::"share",
    resource is Contact
) when { resource.region == "North" };

@id("share:consent local_organizing")
forbid (principal, action == Action::"share", resource)
unless {
    resource has consent.local_organizing &&
    resource.consent.local_organizing.granted == true
};

@id("share:deceased")
forbid (principal, action == Action::"share", resource)
when { resource has is_deceased && resource.is_deceased == true };

@id("show")
permit (
    principal == Recipient::"organizers-north",
    action in [Action::"read_first_name", Action::"read_last_name", Action::"read_city"],
    resource is Contact
);

@id("last4")
permit (
    principal == Recipient::"organizers-north",
    action == Action::"read_phone",
    resource is Contact
);
"""

# The structured form of entity references: Cedar parses it faster than 'Action::"share"'.
PRINCIPAL = {"type": "Recipient", "id": RECIPIENT}
SHARE = {"type": "Action", "id": "share"}
READ = {field: {"type": "Action", "id": f"read_{field}"} for field in ASKED_FIELDS}


def _entity(record: Record) -> dict[str, Any]:
    attrs: dict[str, Any] = {"region": record.get("region") or ""}
    if record.get("is_deceased") is not None:
        attrs["is_deceased"] = bool(record["is_deceased"])
    local = (record.get("consent") or {}).get("local_organizing")
    # Cedar has no null: keep only the evidence the decision reads.
    attrs["consent"] = {} if local is None else {"local_organizing": {"granted": local["granted"]}}
    return {"uid": {"type": "Contact", "id": record["id"]}, "attrs": attrs, "parents": []}


class CedarPeer(Peer):
    """cedarpy with a pre-parsed PolicySet and one Entities handle per batch."""

    name: ClassVar[str] = "cedar"
    description: ClassVar[str] = "Cedar (cedarpy, is_authorized_batch), entities per batch"
    batch = 1000

    def __init__(self) -> None:
        self._cedarpy: Any = None
        self._policies: Any = None

    def start(self) -> None:
        """Import cedarpy and parse the policies once."""
        try:
            import cedarpy
        except ImportError as err:
            raise PeerUnavailable(f"cedar: {err}; run `uv sync` (the bench group)") from err
        self._cedarpy = cedarpy
        self._policies = cedarpy.PolicySet.from_str(POLICIES)

    def plans(self, records: Sequence[Record]) -> list[Plan | None]:
        """Row decisions per batch, then field decisions for the shared contacts."""
        out: list[Plan | None] = []
        for start in range(0, len(records), self.batch):
            out.extend(self._batch(records[start : start + self.batch]))
        return out

    def _batch(self, chunk: Sequence[Record]) -> list[Plan | None]:
        cedar = self._cedarpy
        entities = cedar.Entities.from_json_str(json.dumps([_entity(r) for r in chunk]))
        uids = [{"type": "Contact", "id": r["id"]} for r in chunk]
        rows = cedar.is_authorized_batch(
            [{"principal": PRINCIPAL, "action": SHARE, "resource": uid} for uid in uids],
            self._policies,
            entities,
        )
        shared = [uid for uid, row in zip(uids, rows, strict=True) if row.allowed]
        requests = [
            {"principal": PRINCIPAL, "action": READ[field], "resource": uid}
            for uid in shared
            for field in ASKED_FIELDS
        ]
        answers = iter(cedar.is_authorized_batch(requests, self._policies, entities))
        plans: dict[str, Plan] = {}
        for uid in shared:
            plan: Plan = {}
            for field in ASKED_FIELDS:
                answer = next(answers)
                if answer.allowed:
                    plan[field] = _outcome(answer)
            plans[uid["id"]] = plan
        return [plans.get(uid["id"]) for uid in uids]


def _outcome(answer: Any) -> str:
    """The ``@id`` of the policy that permitted the field: ``show`` or a mask name."""
    (outcome,) = set(answer.diagnostics.id_annotations_by_reason.values())
    return str(outcome)
