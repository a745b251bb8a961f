"""Fast generation of realistic contacts for the fake (emails, phones, addresses, groups, tags)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from .records import derive_names, new_contact
from .store import Store

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Dorothy",
    "Mary",
    "Hedy",
    "Barbara",
    "Margaret",
    "Edsger",
    "Donald",
    "Frances",
    "Radia",
    "Tim",
    "Sophie",
    "Karen",
    "Claude",
    "John",
    "Lise",
    "Emmy",
    "Marie",
    "Rosalind",
    "Chien-Shiung",
    "Ibn",
    "Zoë",
    "José",
    "Ngozi",
    "Aiyana",
    "Yuki",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Vaughan",
    "Jackson",
    "Lamarr",
    "Liskov",
    "Hamilton",
    "Dijkstra",
    "Knuth",
    "Allen",
    "Perlman",
    "Berners-Lee",
    "Wilson",
    "Jones",
    "Shannon",
    "McCarthy",
    "Meitner",
    "Noether",
    "Curie",
    "Franklin",
    "Wu",
    "Sina",
    "Müller",
    "García",
    "Okafor",
    "Tanaka",
    "Smith",
    "Nakamura",
]
ORGS = (
    "Food Bank",
    "Tenants Union",
    "Bike Kitchen",
    "Library Friends",
    "Choir",
    "Repair Café",
    "Co-op",
)
CITIES = (
    ("London", 1226),
    ("Manchester", 1226),
    ("Paris", 1076),
    ("Berlin", 1082),
    ("Toronto", 1039),
    ("Madrid", 1198),
    ("Utrecht", 1152),
    ("Boston", 1228),
    ("Milano", 1107),
)
DOMAINS = ("example.org", "example.com", "mail.example.net")
GROUPS = (("Newsletter", "Newsletter"), ("Volunteers", "Volunteers"), ("Members", "Members"))


def ensure_groups(store: Store) -> list[int]:
    by_name = {row["name"]: gid for gid, row in store.tables["Group"].items()}
    ids = []
    for name, title in GROUPS:
        if name not in by_name:
            row = {
                "name": name,
                "title": title,
                "description": None,
                "source": None,
                "saved_search_id": None,
                "is_active": True,
                "visibility": "Public Pages",
                "group_type": ["2"],
                "is_hidden": False,
                "is_reserved": False,
                "frontend_title": title,
                "frontend_description": None,
                "created_id": None,
                "modified_id": None,
                "cache_date": None,
            }
            by_name[name] = store.insert("Group", row)["id"]
        ids.append(by_name[name])
    return ids


def seed_contacts(
    store: Store, n: int, rng: random.Random | None = None, start: datetime | None = None
) -> list[int]:
    """Insert `n` contacts: ~90% Individuals, with emails, phones, addresses, groups, tags."""
    rng = rng or random.Random(0)
    start = start or datetime(2025, 1, 1, 9, 0, 0)
    groups = ensure_groups(store)
    tag_ids = [t for t, row in store.tables["Tag"].items()]
    if not tag_ids:
        for name in ("Donor", "Volunteer Lead", "Press"):
            tag_ids.append(
                store.insert(
                    "Tag",
                    {
                        "name": name,
                        "label": name,
                        "description": None,
                        "parent_id": None,
                        "is_selectable": True,
                        "is_reserved": False,
                        "is_tagset": False,
                        "used_for": ["civicrm_contact"],
                        "color": None,
                        "created_id": None,
                        "created_date": store.now(),
                    },
                )["id"]
            )
    ids: list[int] = []
    with store.lock:
        for _ in range(n):
            org = rng.random() < 0.1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            values: dict[str, object] = (
                {
                    "contact_type": "Organization",
                    "organization_name": f"{rng.choice(CITIES)[0]} {rng.choice(ORGS)}",
                }
                if org
                else {
                    "contact_type": "Individual",
                    "first_name": first,
                    "last_name": last,
                    "gender_id": rng.choice((1, 2, 3, None)),
                    "birth_date": f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-"
                    f"{rng.randint(1, 28):02d}"
                    if rng.random() < 0.6
                    else None,
                }
            )
            values.update(
                is_opt_out=rng.random() < 0.1,
                do_not_email=rng.random() < 0.05,
                do_not_phone=rng.random() < 0.1,
                do_not_mail=rng.random() < 0.05,
                do_not_sms=rng.random() < 0.1,
                do_not_trade=rng.random() < 0.02,
                external_identifier=f"ext-{store.next_id['Contact']}"
                if rng.random() < 0.3
                else None,
                preferred_communication_method=rng.choice((None, ["2"], ["1", "2"], ["3"])),
                source="seed",
            )
            row = new_contact(store, values)
            created = start + timedelta(seconds=rng.randint(0, 300 * 86400))
            row["created_date"] = created.strftime("%Y-%m-%d %H:%M:%S")
            modified = created + timedelta(seconds=rng.randint(0, 60 * 86400))
            row = store.insert("Contact", row)
            cid = row["id"]
            local = (row.get("first_name") or "info").lower() + (
                f".{(row.get('last_name') or '').lower()}" if not org else ""
            )
            if rng.random() < 0.9:
                _loc(
                    store,
                    "Email",
                    cid,
                    email=f"{local}{cid}@{rng.choice(DOMAINS)}",
                    on_hold=0,
                    is_bulkmail=False,
                )
                if rng.random() < 0.2:
                    _loc(
                        store,
                        "Email",
                        cid,
                        email=f"{local}{cid}@work.example",
                        location_type_id=2,
                        on_hold=0,
                        is_bulkmail=False,
                    )
            if rng.random() < 0.7:
                _loc(
                    store,
                    "Phone",
                    cid,
                    phone=f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                    phone_type_id=rng.choice((1, 2)),
                )
            if rng.random() < 0.6:
                city, country = rng.choice(CITIES)
                _loc(
                    store,
                    "Address",
                    cid,
                    street_address=f"{rng.randint(1, 200)} {rng.choice(LAST)} Street",
                    city=city,
                    postal_code=f"{rng.randint(10000, 99999)}",
                    country_id=country,
                )
            for gid in groups:
                if rng.random() < 0.3:
                    status = rng.choices(("Added", "Removed", "Pending"), (8, 1, 1))[0]
                    store.insert(
                        "GroupContact",
                        {
                            "group_id": gid,
                            "contact_id": cid,
                            "status": status,
                            "location_id": None,
                            "email_id": None,
                        },
                    )
            if rng.random() < 0.1:
                store.insert(
                    "EntityTag",
                    {
                        "entity_table": "civicrm_contact",
                        "entity_id": cid,
                        "tag_id": rng.choice(tag_ids),
                    },
                )
            derive_names(store, row)
            row["modified_date"] = modified.strftime("%Y-%m-%d %H:%M:%S")
            ids.append(cid)
    return ids


def _loc(store: Store, entity: str, cid: int, **values: object) -> None:
    spec = store.schema[entity]
    row: dict[str, object] = dict.fromkeys(spec.fields)
    row.update({"location_type_id": 1, "is_primary": False, "is_billing": False, "contact_id": cid})
    row.update(values)
    row.pop("id")
    store.insert(entity, row)
