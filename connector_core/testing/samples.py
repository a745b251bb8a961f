"""Sample canonical records and a canary secret, for adapter tests.

The records are deliberately awkward (non-ASCII, commas, quotes, newlines, leading zeros,
missing values) yet survive a text-based adapter unchanged: no value has leading or trailing
whitespace, list items are sorted and hold no ``;`` or ``|``, and lists are never empty.
"""

from __future__ import annotations

from pydantic import SecretStr

from connector_core.credentials import SecretRef
from connector_core.records import Record

#: The value every secret resolves to under the kit; it must never show in output.
CANARY_SECRET = "canary-7f3a9c51e2-DO-NOT-LEAK"
TEST_LEDGER_KEY = b"test-ledger-key-not-a-secret-0123456789"
"""A ledger key for state stores built in tests (``StateStore.open(url, ledger_key=...)``)."""

_PEOPLE = (
    ("Zoë", "Müller", "Berlin", "10115", "DE", 52.52, 13.405),
    ("José", "García", "São Paulo", "01310-100", "BR", -23.5505, -46.6333),
    ("Łukasz", "Wróbel", "Kraków", "31-001", "PL", 50.0614, 19.9366),
    ("Lan", "Nguyễn Thị", "Hà Nội", "100000", "VN", 21.0278, 105.8342),
    ("Seán", "O'Neil", "Cork", "T12 X70A", "IE", 51.8985, -8.4756),
    ("小龙", "李", "上海", "200000", "CN", 31.2304, 121.4737),
    ("Chidi", "Okafor", "Lagos", "100001", "NG", 6.5244, 3.3792),
    ("Åse", "Ødegård", "Tromsø", "9008", "NO", 69.6492, 18.9553),
)
_STREETS = ("12 Rue de la Paix\nBâtiment B", "Hauptstraße 5, Hinterhaus", '1 "The Yard"')
_GROUPS = ("Berlin chapter", "Climate & Energy", "Housing", "Volunteers")
_TAGS = ("donor", "organizer", "press", "speaker")


def _display_name(first: str, last: str, i: int) -> str:
    styles = (f"{first} {last}", f"{last}, {first}", f'{first} "{last[:2]}" {last}')
    return styles[i % len(styles)]


def _subset(items: tuple[str, ...], i: int) -> list[str] | None:
    chosen = sorted(item for bit, item in enumerate(items) if (i + 1) >> bit & 1)
    return chosen or None


def _sample(i: int) -> Record:
    first, last, city, postal, country, lat, lon = _PEOPLE[i % len(_PEOPLE)]
    return {
        "id": f"sample-{i:04d}",
        "first_name": first,
        "last_name": last,
        "display_name": _display_name(first, last, i),
        "email": f"person.{i:04d}@example.org",
        "phone": None if i % 3 == 2 else f"+1 555 {(100 + i) % 10_000:04d}",
        "street_address": _STREETS[i % len(_STREETS)] if i % 4 != 3 else None,
        "city": city,
        "postal_code": postal,
        "country": country,
        "latitude": lat,
        "longitude": lon,
        "organization": None if i % 2 else "Friends of the Earth, local group",
        "birth_date": None if i % 5 == 4 else f"{1950 + i % 50}-0{1 + i % 9}-{10 + i % 18}",
        "groups": _subset(_GROUPS, i),
        "tags": _subset(_TAGS, i + 5),
        "consent": {"contact_me": {"granted": i % 2 == 0, "source": "sample", "at": None}},
        "do_not_email": None if i % 7 == 6 else i % 3 == 0,
        "do_not_phone": i % 4 == 1,
    }


def sample_records(n: int) -> list[Record]:
    """Return `n` varied canonical records with ids ``sample-0000`` onwards; deterministic."""
    return [_sample(i) for i in range(n)]


class CanarySecrets:
    """A secret lookup that answers :data:`CANARY_SECRET` for any key, so leaks can be found."""

    def resolve(self, ref: SecretRef) -> SecretStr:
        """Return the canary secret, whatever `ref` names."""
        return SecretStr(CANARY_SECRET)

    def __repr__(self) -> str:
        return "CanarySecrets()"
