"""Synthetic contacts for the benchmarks: deterministic, lazy, and shaped like a real network.

About 30% live in the North, 60% consented to local organizing (some records carry no
``local_organizing`` evidence at all), 2% are deceased, and everyone belongs to a few of
the network's local groups, which the fan-out policies select on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

REGIONS = (
    "North",
    "South",
    "East",
    "West",
    "Midlands",
    "Wales",
    "Scotland",
    "Northern Ireland",
    "London",
    "South West",
    "North East",
    "Yorkshire",
)
LOCAL_GROUPS = 1000
FIRST = ("Ana", "Bruno", "Chloé", "Dmitri", "Efua", "Farid", "Grace", "Hiro", "Ines", "Jonas")
LAST = ("Diallo", "Okafor", "Nowak", "García", "Smith", "Chen", "Haddad", "Evans", "Kaur", "Berg")
CITIES = ("Leeds", "York", "Hull", "Durham", "Bradford", "Sheffield", "Newcastle", "Carlisle")
STREETS = ("Mill Lane", "High Street", "Station Road", "Church Street", "Park Avenue")


def local_group(index: int) -> str:
    """The name of local group ``index`` (``local-0042``)."""
    return f"local-{index:04d}"


def _region(rng: random.Random) -> str:
    return "North" if rng.random() < 0.30 else REGIONS[rng.randrange(1, len(REGIONS))]


def _consent(rng: random.Random) -> dict[str, Any]:
    consent: dict[str, Any] = {"contact_me": {"granted": True, "source": "csv:members", "at": None}}
    roll = rng.random()
    if roll < 0.92:  # the rest have no evidence either way: no evidence is no consent
        granted = roll < 0.60
        consent["local_organizing"] = {"granted": granted, "source": "csv:members", "at": None}
    return consent


def make_record(rng: random.Random, number: int) -> dict[str, Any]:
    """One contact as the engine sees it: a plain dict keyed by canonical field name."""
    phone = f"+44 113 496 {rng.randrange(10000):04d}" if rng.random() < 0.95 else None
    return {
        "id": str(number),
        "first_name": rng.choice(FIRST),
        "last_name": rng.choice(LAST),
        "email": f"person{number}@example.org",
        "phone": phone,
        "street_address": f"{rng.randrange(1, 200)} {rng.choice(STREETS)}",
        "postal_code": f"LS{rng.randrange(1, 30)} {rng.randrange(10)}AB",
        "city": rng.choice(CITIES),
        "region": _region(rng),
        "country": "GB",
        "groups": [local_group(rng.randrange(LOCAL_GROUPS)) for _ in range(rng.randrange(1, 4))],
        "tags": ["supporter"],
        "consent": _consent(rng),
        "do_not_phone": rng.random() < 0.05,
        "is_deceased": rng.random() < 0.02,
        "deleted": False,
        "modified_at": "2025-01-01T00:00:00+00:00",
    }


def iter_records(count: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """Yield ``count`` contacts lazily; the same seed always gives the same contacts."""
    rng = random.Random(seed)
    for number in range(count):
        yield make_record(rng, number)


def make_records(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` contacts in a list (for throughput runs, which must not time generation)."""
    return list(iter_records(count, seed))
