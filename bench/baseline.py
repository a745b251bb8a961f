"""The hand-written baseline: policy (a) as the Python function a developer would write.

Idiomatic, not tuned: what a competent developer writes for this one policy. It makes the
same decision and the same projection as the compiled policy, with the product's
semantics: no evidence of consent is no consent, forbid beats allow, a masked value never
passes through unchanged (``last4`` of four or fewer letters and digits is None), and a
missing field is None.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def last4(value: Any) -> Any:
    """Keep the last four letters or digits, one ``*`` per hidden one; None if too short."""
    if not isinstance(value, str):
        value = str(value)
    kept = "".join(filter(str.isalnum, value))
    if len(kept) <= 4:
        return None
    return "*" * (len(kept) - 4) + kept[-4:]


def organizers_north(record: Record) -> Record | None:
    """Policy (a): the projection local organizers of the North may see, or None."""
    consent = record.get("consent")
    state = consent.get("local_organizing") if consent else None
    if not state or state.get("granted") is not True:
        return None
    if record.get("is_deceased") is True:
        return None
    if record.get("region") != "North":
        return None
    phone = record.get("phone")
    return {
        "first_name": record.get("first_name"),
        "last_name": record.get("last_name"),
        "city": record.get("city"),
        "phone": None if phone is None else last4(phone),
    }
