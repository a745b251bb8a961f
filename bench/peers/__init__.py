"""The policy engines a user might pick instead of ours, each encoding policy (a).

Every peer answers the same questions per record: one row decision (share or not) and, for
a shared record, one decision per field the policy names (``show``, a mask name, or absent).
Masking itself is shared Python code (:func:`project`, with the product's own masks), so
the peers only decide. Each peer
receives the decision input in its own natural format, built from the fields the decision
reads (region, is_deceased, consent): building it is part of the peer's measured time.
"""

from __future__ import annotations

import abc
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from connector_core.masks import BUILTIN_MASKS, MaskContext

Record = dict[str, Any]
Plan = dict[str, str]  # field -> "show" or a mask name; unlisted fields are absent
Shared = list[tuple[str, Record]]  # (record id, projection) for every shared record, in order

BENCH = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("BENCH_PEERS_DIR", BENCH / ".peers"))
RECIPIENT = "organizers-north"
ASKED_FIELDS = ("first_name", "last_name", "city", "phone")


class PeerUnavailable(RuntimeError):
    """A peer cannot run on this machine; the message says why and how to fix it."""


def _product_mask(name: str) -> Callable[[Any, Record], Any]:
    """The product's own mask, applied as the product applies it (shared by every peer)."""
    mask = BUILTIN_MASKS[name](None, MaskContext.for_validation())

    def apply(value: Any, record: Record) -> Any:
        if value is None:
            return None
        masked = mask(value, record)
        return None if masked == value else masked  # a mask never passes a value through

    return apply


MASKS = {name: _product_mask(name) for name in ("last4",)}


def project(record: Record, plan: Plan) -> Record:
    """The projection a plan allows: shown fields as they are, masked ones masked."""
    return {
        field: record.get(field) if outcome == "show" else MASKS[outcome](record.get(field), record)
        for field, outcome in plan.items()
    }


def consent_granted(record: Record, purpose: str = "local_organizing") -> bool:
    """True only for explicit evidence of consent (no evidence is no consent)."""
    state = (record.get("consent") or {}).get(purpose)
    return isinstance(state, dict) and state.get("granted") is True


class Peer(abc.ABC):
    """One engine: started once, asked in batches, closed at the end."""

    name: ClassVar[str]
    description: ClassVar[str]

    def start(self) -> None:
        """Load the engine and the policy (servers are launched here)."""

    def close(self) -> None:
        """Stop anything :meth:`start` launched."""

    @abc.abstractmethod
    def plans(self, records: Sequence[Record]) -> list[Plan | None]:
        """For each record, its field plan if the engine shares it, else None."""

    def run(self, records: Sequence[Record]) -> Shared:
        """Decide every record and project the shared ones (the measured unit of work)."""
        return [
            (record["id"], project(record, plan))
            for record, plan in zip(records, self.plans(records), strict=True)
            if plan is not None
        ]

    def __enter__(self) -> Peer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PEERS = {
    "opa": "bench.peers.opa:OpaPeer",
    "cedar": "bench.peers.cedar:CedarPeer",
    "cerbos": "bench.peers.cerbos:CerbosPeer",
    "casbin": "bench.peers.casbin_peer:CasbinPeer",
}


def make_peer(name: str) -> Peer:
    """Instantiate a peer by name; raises PeerUnavailable if its engine is not installed."""
    module_name, _, class_name = PEERS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PeerUnavailable(f"{name}: {err}; run `uv sync` and bench/setup") from err
    peer: Peer = getattr(module, class_name)()
    return peer
