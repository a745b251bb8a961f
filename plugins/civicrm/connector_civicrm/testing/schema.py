"""The fake CiviCRM's schema: entities, field types, joins and option lists (reference §3-§4)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Field kinds: "Field" (standard, matched by `*`), "Extra" (virtual joins, not matched by `*`),
# "Custom" (custom fields, matched by `custom.*`), "Filter" (get-only pseudo-fields).
INT, STR, BOOL, DATE, TS, SER, FLOAT = (
    "Integer",
    "String",
    "Boolean",
    "Date",
    "Timestamp",
    "Serialized",
    "Float",
)


@dataclass
class FieldSpec:
    name: str
    type: str = STR
    kind: str = "Field"
    fk: str | None = None  # entity an implicit join leads to
    options: dict[object, dict[str, str]] | None = None  # value -> {"name","label","abbr",...}
    permission: tuple[str, ...] = ()  # any of these is needed to see the field
    readonly: bool = False


@dataclass
class EntitySpec:
    name: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    permissions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # action -> all needed
    actions: tuple[str, ...] = ("get", "create", "update", "save", "delete", "getFields")

    def add(self, *specs: FieldSpec) -> None:
        for spec in specs:
            self.fields[spec.name] = spec


def _opts(pairs: list[tuple[object, str]]) -> dict[object, dict[str, str]]:
    return {value: {"name": name, "label": name} for value, name in pairs}


LOCATION_TYPES = _opts([(1, "Home"), (2, "Work"), (3, "Main"), (4, "Other"), (5, "Billing")])
PHONE_TYPES = _opts([(1, "Phone"), (2, "Mobile"), (3, "Fax"), (4, "Pager"), (5, "Voicemail")])
ON_HOLD: dict[object, dict[str, str]] = {
    0: {"name": "0", "label": "No"},
    1: {"name": "1", "label": "On Hold Bounce"},
    2: {"name": "2", "label": "On Hold Opt Out"},
}
CONTACT_TYPES = _opts(
    [("Individual", "Individual"), ("Organization", "Organization"), ("Household", "Household")]
)
GENDERS = _opts([(1, "Female"), (2, "Male"), (3, "Other")])
PREFIXES = _opts([(1, "Mrs."), (2, "Ms."), (3, "Mr."), (4, "Dr.")])
SUFFIXES = _opts([(1, "Jr."), (2, "Sr."), (3, "II"), (4, "III")])
COMM_METHODS = _opts(
    [("1", "Phone"), ("2", "Email"), ("3", "Postal Mail"), ("4", "SMS"), ("5", "Fax")]
)
COMM_STYLES = _opts([(1, "formal"), (2, "familiar")])
GC_STATUS = _opts([("Added", "Added"), ("Removed", "Removed"), ("Pending", "Pending")])
COUNTRIES: dict[object, dict[str, str]] = {
    cid: {"name": name, "label": name, "abbr": abbr}
    for cid, name, abbr in [
        (1020, "Belgium", "BE"),
        (1031, "Brazil", "BR"),
        (1039, "Canada", "CA"),
        (1048, "Colombia", "CO"),
        (1076, "France", "FR"),
        (1082, "Germany", "DE"),
        (1107, "Italy", "IT"),
        (1152, "Netherlands", "NL"),
        (1198, "Spain", "ES"),
        (1226, "United Kingdom", "GB"),
        (1228, "United States", "US"),
    ]
}
#: A few rows of CiviCRM's stock state/province table, names shared across countries as in
#: the real one (48 names are shared by 109 rows there). Ids of the two Limburgs as seen.
STATE_PROVINCE_ROWS = [
    (1441, "Antwerpen", "VAN", 1020),
    (1442, "Limburg", "VLI", 1020),
    (1050, "Amazonas", "AM", 1031),
    (1120, "Distrito Federal", "DF", 1031),
    (1167, "Amazonas", "AMA", 1048),
    (2050, "Île-de-France", "IDF", 1076),
    (2600, "Kent", "KEN", 1226),
    (2640, "Yorkshire", "YOR", 1226),
    (5024, "Noord-Brabant", "NB", 1152),
    (5025, "Limburg", "LI", 1152),
]
STATE_PROVINCES: dict[object, dict[str, str]] = {
    sid: {"name": name, "label": name, "abbr": abbr} for sid, name, abbr, _ in STATE_PROVINCE_ROWS
}

# §3.4: fields each contact type loses when `contact_type` is in the row.
PRUNE = {
    "Individual": (
        "organization_name",
        "legal_name",
        "sic_code",
        "household_name",
        "primary_contact_id",
    ),
    "Organization": (
        "first_name",
        "middle_name",
        "last_name",
        "prefix_id",
        "suffix_id",
        "formal_title",
        "job_title",
        "gender_id",
        "birth_date",
        "employer_id",
        "household_name",
        "primary_contact_id",
    ),
    "Household": (
        "first_name",
        "middle_name",
        "last_name",
        "prefix_id",
        "suffix_id",
        "formal_title",
        "job_title",
        "gender_id",
        "birth_date",
        "employer_id",
        "organization_name",
        "legal_name",
        "sic_code",
    ),
}

CONTACT_FIELDS = [
    "id",
    "contact_type",
    "external_identifier",
    "display_name",
    "organization_name",
    "contact_sub_type",
    "first_name",
    "middle_name",
    "last_name",
    "do_not_email",
    "do_not_phone",
    "do_not_mail",
    "do_not_sms",
    "do_not_trade",
    "is_opt_out",
    "legal_identifier",
    "sort_name",
    "nick_name",
    "legal_name",
    "image_URL",
    "preferred_communication_method",
    "preferred_language",
    "hash",
    "api_key",
    "source",
    "prefix_id",
    "suffix_id",
    "formal_title",
    "communication_style_id",
    "email_greeting_id",
    "email_greeting_custom",
    "email_greeting_display",
    "postal_greeting_id",
    "postal_greeting_custom",
    "postal_greeting_display",
    "addressee_id",
    "addressee_custom",
    "addressee_display",
    "job_title",
    "gender_id",
    "birth_date",
    "is_deceased",
    "deceased_date",
    "household_name",
    "primary_contact_id",
    "sic_code",
    "user_unique_id",
    "employer_id",
    "is_deleted",
    "created_date",
    "modified_date",
    "preferred_mail_format",
]
_CONTACT_TYPES = {
    "id": INT,
    "prefix_id": INT,
    "suffix_id": INT,
    "communication_style_id": INT,
    "email_greeting_id": INT,
    "postal_greeting_id": INT,
    "addressee_id": INT,
    "gender_id": INT,
    "primary_contact_id": INT,
    "employer_id": INT,
    "do_not_email": BOOL,
    "do_not_phone": BOOL,
    "do_not_mail": BOOL,
    "do_not_sms": BOOL,
    "do_not_trade": BOOL,
    "is_opt_out": BOOL,
    "is_deceased": BOOL,
    "is_deleted": BOOL,
    "contact_sub_type": SER,
    "preferred_communication_method": SER,
    "birth_date": DATE,
    "deceased_date": DATE,
    "created_date": TS,
    "modified_date": TS,
}
_CONTACT_OPTIONS = {
    "contact_type": CONTACT_TYPES,
    "gender_id": GENDERS,
    "prefix_id": PREFIXES,
    "suffix_id": SUFFIXES,
    "preferred_communication_method": COMM_METHODS,
    "communication_style_id": COMM_STYLES,
}

# Contact defaults for a new record (required booleans default to false).
CONTACT_DEFAULTS: dict[str, object] = dict.fromkeys(CONTACT_FIELDS)
CONTACT_DEFAULTS.update({n: False for n, t in _CONTACT_TYPES.items() if t == BOOL})
CONTACT_DEFAULTS["preferred_mail_format"] = "Both"
CONTACT_DEFAULTS["communication_style_id"] = 1

# Virtual `*_primary` / `*_billing` joins: name -> (entity, flag field).
LOCATION_JOINS = {
    "email_primary": ("Email", "is_primary"),
    "email_billing": ("Email", "is_billing"),
    "phone_primary": ("Phone", "is_primary"),
    "phone_billing": ("Phone", "is_billing"),
    "address_primary": ("Address", "is_primary"),
    "address_billing": ("Address", "is_billing"),
}
LABEL_FIELD = {"Email": "email", "Phone": "phone", "Address": "street_address"}

ACCESS = ("access CiviCRM",)


def build_schema(custom_fields: dict[str, str] | None = None) -> dict[str, EntitySpec]:
    """The entities of the fake; `custom_fields` maps API names (`Group.field`) to data types."""
    contact = EntitySpec(
        "Contact",
        actions=(
            "get",
            "create",
            "update",
            "save",
            "delete",
            "getFields",
            "getMergedTo",
            "getMergedFrom",
        ),
    )
    for name in CONTACT_FIELDS:
        contact.add(
            FieldSpec(
                name,
                _CONTACT_TYPES.get(name, STR),
                options=_CONTACT_OPTIONS.get(name),
                readonly=name in ("created_date", "modified_date", "sort_name"),
            )
        )
    contact.fields["api_key"].permission = ("administer CiviCRM", "edit api keys")
    contact.fields["employer_id"].fk = "Contact"
    contact.fields["primary_contact_id"].fk = "Contact"
    for join, (target, _flag) in LOCATION_JOINS.items():
        contact.add(FieldSpec(join, INT, kind="Extra", fk=target, readonly=True))
    contact.add(
        FieldSpec("groups", INT, kind="Filter", fk="Group"),
        FieldSpec("tags", INT, kind="Filter", fk="Tag"),
    )
    for api_name, data_type in (custom_fields or {}).items():
        contact.add(FieldSpec(api_name, data_type, kind="Custom"))
    contact.actions = (*contact.actions, "checkAccess")
    contact.permissions = {
        "create": ("access CiviCRM", "add contacts"),
        "update": ACCESS,
        "save": ACCESS,
        "delete": ("access CiviCRM", "delete contacts"),
        "getMergedTo": ACCESS,
        "getMergedFrom": ACCESS,
    }

    def location(name: str, extra: list[FieldSpec]) -> EntitySpec:
        spec = EntitySpec(
            name, permissions={"create": ACCESS, "update": ACCESS, "save": ACCESS, "delete": ACCESS}
        )
        spec.add(
            FieldSpec("id", INT),
            FieldSpec("contact_id", INT, fk="Contact"),
            FieldSpec("location_type_id", INT, options=LOCATION_TYPES),
            FieldSpec("is_primary", BOOL),
            FieldSpec("is_billing", BOOL),
            *extra,
        )
        return spec

    email = location(
        "Email",
        [
            FieldSpec("email"),
            FieldSpec("on_hold", INT, options=ON_HOLD),
            FieldSpec("is_bulkmail", BOOL),
            FieldSpec("hold_date", TS),
            FieldSpec("reset_date", TS),
            FieldSpec("signature_text"),
            FieldSpec("signature_html"),
        ],
    )
    phone = location(
        "Phone",
        [
            FieldSpec("mobile_provider_id", INT),
            FieldSpec("phone"),
            FieldSpec("phone_ext"),
            FieldSpec("phone_numeric", readonly=True),
            FieldSpec("phone_type_id", INT, options=PHONE_TYPES),
        ],
    )
    address = location(
        "Address",
        [
            FieldSpec(n)
            for n in (
                "street_address",
                "street_number",
                "street_number_suffix",
                "street_name",
                "street_unit",
                "supplemental_address_1",
                "supplemental_address_2",
                "supplemental_address_3",
                "city",
            )
        ]
        + [
            FieldSpec("county_id", INT),
            FieldSpec("state_province_id", INT, fk="StateProvince", options=STATE_PROVINCES),
            FieldSpec("postal_code_suffix"),
            FieldSpec("postal_code"),
            FieldSpec("country_id", INT, options=COUNTRIES),
            FieldSpec("geo_code_1", FLOAT),
            FieldSpec("geo_code_2", FLOAT),
            FieldSpec("manual_geo_code", BOOL),
            FieldSpec("timezone"),
            FieldSpec("name"),
            FieldSpec("master_id", INT, fk="Address"),
        ],
    )
    group = EntitySpec(
        "Group",
        permissions={
            "get": ACCESS,
            "create": ("edit groups",),
            "update": ("edit groups",),
            "save": ("edit groups",),
            "delete": ("edit groups",),
        },
    )
    group.add(
        FieldSpec("id", INT),
        FieldSpec("name"),
        FieldSpec("title"),
        FieldSpec("description"),
        FieldSpec("source"),
        FieldSpec("saved_search_id", INT),
        FieldSpec("is_active", BOOL),
        FieldSpec("visibility"),
        FieldSpec("group_type", SER),
        FieldSpec("is_hidden", BOOL),
        FieldSpec("is_reserved", BOOL),
        FieldSpec("frontend_title"),
        FieldSpec("frontend_description"),
        FieldSpec("created_id", INT, fk="Contact"),
        FieldSpec("modified_id", INT, fk="Contact"),
        FieldSpec("cache_date", TS),
    )
    gc = EntitySpec(
        "GroupContact",
        permissions=dict.fromkeys(("get", "create", "update", "save", "delete"), ACCESS),
    )
    gc.add(
        FieldSpec("id", INT),
        FieldSpec("group_id", INT, fk="Group"),
        FieldSpec("contact_id", INT, fk="Contact"),
        FieldSpec("status", options=GC_STATUS),
        FieldSpec("location_id", INT),
        FieldSpec("email_id", INT),
    )
    history = EntitySpec(
        "SubscriptionHistory", actions=("get", "getFields"), permissions={"get": ACCESS}
    )
    history.add(
        FieldSpec("id", INT),
        FieldSpec("contact_id", INT, fk="Contact"),
        FieldSpec("group_id", INT, fk="Group"),
        FieldSpec("date", TS),
        FieldSpec("method"),
        FieldSpec("status", options=GC_STATUS),
        FieldSpec("tracking"),
    )
    tag = EntitySpec(
        "Tag", permissions=dict.fromkeys(("get", "create", "update", "save", "delete"), ACCESS)
    )
    tag.add(
        FieldSpec("id", INT),
        FieldSpec("name"),
        FieldSpec("label"),
        FieldSpec("description"),
        FieldSpec("parent_id", INT, fk="Tag"),
        FieldSpec("is_selectable", BOOL),
        FieldSpec("is_reserved", BOOL),
        FieldSpec("is_tagset", BOOL),
        FieldSpec("used_for", SER),
        FieldSpec("color"),
        FieldSpec("created_id", INT),
        FieldSpec("created_date", TS),
    )
    et = EntitySpec(
        "EntityTag",
        permissions=dict.fromkeys(("get", "create", "update", "save", "delete"), ACCESS),
    )
    et.add(
        FieldSpec("id", INT),
        FieldSpec("entity_table"),
        FieldSpec("entity_id", INT, fk="Contact"),
        FieldSpec("tag_id", INT, fk="Tag"),
    )
    custom_group = EntitySpec(
        "CustomGroup", actions=("get", "getFields"), permissions={"get": ACCESS}
    )
    custom_group.add(
        FieldSpec("id", INT),
        FieldSpec("name"),
        FieldSpec("title"),
        FieldSpec("extends"),
        FieldSpec("is_active", BOOL),
    )
    custom_field = EntitySpec(
        "CustomField", actions=("get", "getFields"), permissions={"get": ACCESS}
    )
    custom_field.add(
        FieldSpec("id", INT),
        FieldSpec("custom_group_id", INT, fk="CustomGroup"),
        FieldSpec("name"),
        FieldSpec("label"),
        FieldSpec("data_type"),
        FieldSpec("is_active", BOOL),
    )
    state = EntitySpec("StateProvince", actions=("get", "getFields"), permissions={"get": ()})
    state.add(
        FieldSpec("id", INT),
        FieldSpec("name"),
        FieldSpec("abbreviation"),
        FieldSpec("country_id", INT, options=COUNTRIES),
        FieldSpec("is_active", BOOL),
    )
    entities = (contact, email, phone, address, group, gc, history, tag, et, state)
    return {e.name: e for e in (*entities, custom_group, custom_field)}
