"""OPA: policy (a) in Rego, evaluated in process by OPA's Go evaluator, a batch per call.

No ``opa`` binary is in the package registries; the PyPI wheel ``opa-golib-python-bindings``
carries OPA's evaluator as a shared library with a ctypes wrapper, which bench/setup unpacks
into ``bench/.peers/opa`` (its wheel says Python >= 3.14 but holds no compiled Python).
One evaluation decides a whole batch: the row decision and one outcome per field.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from bench.peers import ASKED_FIELDS, PEERS_DIR, Peer, PeerUnavailable, Plan, Record

REGO = """
package commons.organizers_north

import rego.v1

fields := %(fields)s

# Consent gate: no evidence of consent is no consent.
consented(r) if r.consent.local_organizing.granted == true

allowed(r) if r.region == "North"

forbidden(r) if r.is_deceased == true

share(r) if {
	consented(r)
	allowed(r)
	not forbidden(r)
}

# One decision per field; a field with no outcome is absent.
field_outcome(_, "first_name") := "show"

field_outcome(_, "last_name") := "show"

field_outcome(_, "city") := "show"

field_outcome(_, "phone") := "last4"

decision(r) := plan if {
	share(r)
	plan := {f: o | some f in fields; o := field_outcome(r, f)}
} else := null

decisions := [decision(r) | some r in input.records]
"""

OPA_DIR = PEERS_DIR / "opa"


def _engine_class() -> Any:
    if not (OPA_DIR / "opa_bindings" / "libopabridge.so").exists():
        raise PeerUnavailable(f"opa: the OPA bindings are not in {OPA_DIR}; run bench/setup")
    if str(OPA_DIR) not in sys.path:
        sys.path.insert(0, str(OPA_DIR))
    try:
        from opa_bindings import OpaEngine  # type: ignore[import-not-found]
    except OSError as err:  # the shared library failed to load
        raise PeerUnavailable(f"opa: libopabridge.so does not load here: {err}") from err
    return OpaEngine


class OpaPeer(Peer):
    """Rego over ``{"records": [...]}``: one embedded evaluation per batch."""

    name: ClassVar[str] = "opa"
    description: ClassVar[str] = "OPA (Rego, Go evaluator in process), one eval per batch"
    batch = 1000

    def __init__(self) -> None:
        self._engine: Any = None

    def start(self) -> None:
        """Load OPA's evaluator and the Rego policy."""
        self._engine = _engine_class()()
        fields = "[" + ", ".join(f'"{f}"' for f in ASKED_FIELDS) + "]"
        self._engine.add_policy("organizers_north.rego", REGO % {"fields": fields})

    def close(self) -> None:
        """Release the Go engine."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def plans(self, records: Sequence[Record]) -> list[Plan | None]:
        """Evaluate ``decisions`` over batches of decision inputs."""
        out: list[Plan | None] = []
        for start in range(0, len(records), self.batch):
            chunk = records[start : start + self.batch]
            inputs = [
                {
                    "region": r.get("region"),
                    "is_deceased": r.get("is_deceased"),
                    "consent": r.get("consent"),
                }
                for r in chunk
            ]
            out.extend(
                self._engine.eval_document(
                    "commons.organizers_north.decisions", {"records": inputs}
                )
            )
        return out
