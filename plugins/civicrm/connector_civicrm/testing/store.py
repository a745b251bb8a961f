"""The fake CiviCRM's in-memory database and its APIv4 actions (reference §2.1, §3, §4, §5)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .operators import ApiError, Row
from .query import compile_where, expand_select, mentions, sort_rows
from .schema import (
    LOCATION_JOINS,
    PRUNE,
    STATE_PROVINCE_ROWS,
    EntitySpec,
    build_schema,
)

ALL_PERMISSIONS = frozenset(
    {
        "access CiviCRM",
        "access AJAX API",
        "view all contacts",
        "edit all contacts",
        "add contacts",
        "delete contacts",
        "access deleted contacts",
        "access all custom data",
        "view debug output",
        "edit groups",
        "merge duplicate contacts",
        "authenticate with api key",
        "administer CiviCRM",
    }
)
GET_PARAMS = {
    "select",
    "where",
    "orderBy",
    "limit",
    "offset",
    "join",
    "groupBy",
    "having",
    "debug",
    "chain",
    "language",
    "translationMode",
}
ACTION_PARAMS = {
    "get": GET_PARAMS,
    "create": {"values", "chain", "debug", "language"},
    "update": {"values", "where", "reload", "chain", "debug", "language"},
    "save": {"records", "defaults", "match", "reload", "chain", "debug", "language"},
    "delete": {"where", "chain", "debug", "useTrash"},
    "getFields": {
        "select",
        "where",
        "loadOptions",
        "action",
        "values",
        "debug",
        "orderBy",
        "limit",
        "offset",
    },
    "getMergedTo": {"contactId", "debug"},
    "checkAccess": {"action", "values", "debug"},
    "getMergedFrom": {"contactId", "debug"},
}


@dataclass
class ApiUser:
    """Who a key (or JWT) logs in as; `acl_contact_ids=None` + `view all contacts` sees all."""

    contact_id: int = 1
    permissions: frozenset[str] = ALL_PERMISSIONS
    has_cms_user: bool = True
    acl_contact_ids: set[int] | None = None

    @property
    def detailed_errors(self) -> bool:
        return "view debug output" in self.permissions


ANONYMOUS = ApiUser(
    contact_id=0, permissions=frozenset(), has_cms_user=False, acl_contact_ids=set()
)


@dataclass
class Result:
    values: list[Any]
    count: int
    count_fetched: int
    count_matched: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Store:
    """Thread-safe tables keyed by id; every public method takes the lock."""

    def __init__(self, timezone: str = "UTC", custom_fields: dict[str, str] | None = None) -> None:
        self.schema: dict[str, EntitySpec] = build_schema(custom_fields)
        self.tables: dict[str, dict[int, Row]] = {name: {} for name in self.schema}
        self.next_id: dict[str, int] = dict.fromkeys(self.schema, 1)
        self.loc_index: dict[str, dict[int, int]] = {join: {} for join in LOCATION_JOINS}
        self.by_contact: dict[str, dict[int, set[int]]] = {
            e: {} for e in ("Email", "Phone", "Address")
        }
        self.pairs: dict[tuple[int, int], int] = {}  # (group_id, contact_id) -> GroupContact id
        #: Refuse an unknown option label (``state_province_id:label``) as CiviCRM does, with
        #: ``'<value>' is not a valid option for field <name>``, quoting the value; off by
        #: default (the fake then stores NULL, as it always did).
        self.strict_options = False
        self.merged_to: dict[int, int] = {}
        self.timezone = ZoneInfo(timezone)
        self.lock = threading.RLock()
        self.frozen: datetime | None = None
        self.trash_enabled = True  # the `contact_undelete` setting
        self.trash_bumps_modified = True  # 6.7+
        self._seed_custom_fields(custom_fields or {})
        for sid, name, abbr, country in STATE_PROVINCE_ROWS:
            row = {"name": name, "abbreviation": abbr, "country_id": country, "is_active": True}
            self.tables["StateProvince"][sid] = {"id": sid, **row}

    def _seed_custom_fields(self, custom_fields: dict[str, str]) -> None:
        """The CustomGroup and CustomField rows behind each `Group.field` API name."""
        groups: dict[str, int] = {}
        for api_name, data_type in custom_fields.items():
            group, _, name = api_name.partition(".")
            if group not in groups:
                row = {"name": group, "title": group, "extends": "Contact", "is_active": True}
                groups[group] = self.insert("CustomGroup", row)["id"]
            field = {"name": name, "label": name, "data_type": data_type, "is_active": True}
            self.insert("CustomField", {**field, "custom_group_id": groups[group]})

    # ---- clock ----------------------------------------------------------------------------
    def now(self) -> str:
        moment = self.frozen or datetime.now(self.timezone).replace(tzinfo=None)
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    # ---- low-level writes (no permission checks) -------------------------------------------
    def insert(self, entity: str, row: Row) -> Row:
        rid = row.get("id") or self.next_id[entity]
        self.next_id[entity] = max(self.next_id[entity], rid + 1)
        row["id"] = rid
        self.tables[entity][rid] = row
        if entity in self.by_contact:
            self.by_contact[entity].setdefault(row["contact_id"], set()).add(rid)
            if not any(
                self.tables[entity][o].get("is_primary")
                for o in self.by_contact[entity][row["contact_id"]]
                if o != rid
            ):
                row["is_primary"] = True  # the first location record becomes primary
            self._primary_changed(entity, row)
        elif entity == "GroupContact":
            self.pairs[(row["group_id"], row["contact_id"])] = rid
        return row

    def _primary_changed(self, entity: str, row: Row) -> None:
        cid = row["contact_id"]
        for flag in ("is_primary", "is_billing"):
            join = f"{entity.lower()}_{flag[3:]}"
            if row.get(flag):
                for other in self.by_contact[entity].get(cid, ()):
                    if other != row["id"]:
                        self.tables[entity][other][flag] = False
                self.loc_index[join][cid] = row["id"]
            elif self.loc_index[join].get(cid) == row["id"]:
                del self.loc_index[join][cid]
        if entity == "Phone":
            row["phone_numeric"] = (
                "".join(c for c in str(row.get("phone") or "") if c.isdigit()) or None
            )
        self.touch(cid)

    def touch(self, contact_id: int) -> None:
        """Bump `modified_date` as the MySQL triggers on location tables do (§3.6)."""
        contact = self.tables["Contact"].get(contact_id)
        if contact is not None:
            contact["modified_date"] = self.now()

    def remove(self, entity: str, rid: int) -> Row | None:
        row = self.tables[entity].pop(rid, None)
        if row is None:
            return None
        if entity in self.by_contact:
            cid = row["contact_id"]
            self.by_contact[entity].get(cid, set()).discard(rid)
            for flag in ("primary", "billing"):
                if self.loc_index[f"{entity.lower()}_{flag}"].get(cid) == rid:
                    del self.loc_index[f"{entity.lower()}_{flag}"][cid]
            self.touch(cid)
        elif entity == "GroupContact":
            self.pairs.pop((row["group_id"], row["contact_id"]), None)
        return row

    def hard_delete_contact(self, cid: int) -> None:
        for entity in ("Email", "Phone", "Address"):
            for rid in list(self.by_contact[entity].get(cid, ())):
                self.remove(entity, rid)
        for entity, key in (("GroupContact", "contact_id"), ("EntityTag", "entity_id")):
            for rid in [r for r, row in self.tables[entity].items() if row[key] == cid]:
                self.remove(entity, rid)
        self.tables["Contact"].pop(cid, None)

    def group_member_ids(self, group_ids: list[int]) -> set[int]:
        wanted = set(group_ids)
        return {
            cid
            for (gid, cid), rid in self.pairs.items()
            if gid in wanted and self.tables["GroupContact"][rid]["status"] == "Added"
        }

    def tagged_ids(self, tag_ids: list[int]) -> set[int]:
        wanted, tags = set(tag_ids), self.tables["Tag"]
        grew = True
        while grew:  # include child tags
            more = {tid for tid, t in tags.items() if t.get("parent_id") in wanted} - wanted
            grew = bool(more)
            wanted |= more
        return {r["entity_id"] for r in self.tables["EntityTag"].values() if r["tag_id"] in wanted}

    def move_memberships(self, loser: int, survivor: int) -> None:
        """A merge: the loser's GroupContact rows become the survivor's (those of groups the
        survivor is not in), their SubscriptionHistory rows too; nothing is bumped."""
        for (group, contact), rid in list(self.pairs.items()):
            if contact != loser or (group, survivor) in self.pairs:
                continue
            del self.pairs[(group, contact)]
            self.pairs[(group, survivor)] = rid
            self.tables["GroupContact"][rid]["contact_id"] = survivor
            for row in self.tables["SubscriptionHistory"].values():
                if row.get("contact_id") == loser and row.get("group_id") == group:
                    row["contact_id"] = survivor

    # ---- visibility ------------------------------------------------------------------------
    def contact_visible(self, user: ApiUser, cid: int) -> bool:
        row = self.tables["Contact"].get(cid)
        if row is None:
            return False
        if row["is_deleted"] and "access deleted contacts" not in user.permissions:
            return False
        if {
            "view all contacts",
            "edit all contacts",
        } & user.permissions and user.acl_contact_ids is None:
            return True
        return cid in (user.acl_contact_ids or set())

    def contact_editable(self, user: ApiUser, cid: int) -> bool:
        if "edit all contacts" in user.permissions and user.acl_contact_ids is None:
            return True
        return cid in (user.acl_contact_ids or set())

    def _acl(self, user: ApiUser, entity: str) -> Callable[[Row], bool]:
        if entity == "Contact":
            return lambda row: self.contact_visible(user, row["id"])
        if entity in ("Email", "Phone", "Address", "GroupContact", "SubscriptionHistory"):
            return lambda row: self.contact_visible(user, row["contact_id"])
        if entity == "EntityTag":
            return lambda row: self.contact_visible(user, row["entity_id"])
        if entity in ("CustomField", "CustomGroup"):  # as 6.17.2: hidden, not refused
            return lambda row: "access all custom data" in user.permissions
        return lambda row: True

    # ---- actions ---------------------------------------------------------------------------
    def run(self, user: ApiUser, entity: str, action: str, params: dict[str, Any]) -> Result:
        spec = self.schema.get(entity)
        if spec is None:
            raise ApiError(
                f"API ({entity}, {action}) does not exist "
                "(or the extension it belongs to is not enabled)."
            )
        if action not in spec.actions:
            raise ApiError(f"Api {entity} {action} version 4 does not exist.")
        needed = spec.permissions.get(action, ())
        if not set(needed) <= user.permissions:
            raise ApiError(f"Authorization failed: CiviCRM APIv4 ({entity}::{action})", status=403)
        params = {k: v for k, v in params.items() if k.lower() != "checkpermissions"}  # 6.16.4+
        for key in params:
            if key not in ACTION_PARAMS[action] or (key == "useTrash" and entity != "Contact"):
                raise ApiError(f"Unknown api parameter: set{key[:1].upper()}{key[1:]}")
        with self.lock:
            if action == "get":
                return self.get(user, entity, params)
            if action == "getFields":
                return self.get_fields(user, spec, params)
            if action == "checkAccess":
                return self.check_access(user, spec, params)
            if action in ("getMergedTo", "getMergedFrom"):
                cid = int(params.get("contactId") or 0)
                if action == "getMergedTo":
                    found: list[Any] = (
                        [{"id": self.merged_to[cid]}] if cid in self.merged_to else [[]]
                    )
                else:
                    found = [{"id": k} for k, v in self.merged_to.items() if v == cid]
                return Result(list(found), len(found), len(found))
            from .writes import write_action  # local import: writes.py uses Store

            return write_action(self, user, entity, action, params)

    def get_fields(self, user: ApiUser, spec: EntitySpec, params: dict[str, Any]) -> Result:
        """``getFields``: the fields the user may see; ``where`` on ``name`` (``=``/``IN``);
        ``loadOptions`` true gives ``{value: label}``, a list of properties gives a list of
        ``{"id", ...}`` dicts (as CiviCRM's BasicGetFieldsAction)."""
        names: set[str] | None = None
        for clause in params.get("where") or []:
            if isinstance(clause, list) and len(clause) == 3 and clause[0] == "name":
                items = clause[2] if isinstance(clause[2], list) else [clause[2]]
                names = {str(i) for i in items} if names is None else names & set(map(str, items))
        load = params.get("loadOptions")
        fields = [
            {
                "name": f.name,
                "type": f.kind,
                "data_type": f.type,
                "title": f.name,
                "readonly": f.readonly,
                "options": _options(f.options, load),
                "fk_entity": f.fk,
            }
            for f in spec.fields.values()
            if f.kind != "Filter" and self.field_visible(user, f)
            if names is None or f.name in names
        ]
        return Result(fields, len(fields), len(fields))

    def check_access(self, user: ApiUser, spec: EntitySpec, params: dict[str, Any]) -> Result:
        """``checkAccess``: may this user run `action` on these values (the action's
        permissions, then the record's ACL)? Answers ``[{"access": bool, "id": …}]``."""
        action, values = str(params.get("action") or ""), params.get("values") or {}
        cid = values.get("id") if isinstance(values, dict) else None
        granted = set(spec.permissions.get(action, ())) <= user.permissions
        if granted and spec.name == "Contact" and cid is not None:
            if action in ("update", "delete"):
                granted = self.contact_editable(user, int(cid))
            elif action == "get":
                granted = self.contact_visible(user, int(cid))
        if granted and spec.name == "Contact" and action == "create":
            granted = "add contacts" in user.permissions
        return Result([{"access": granted, "id": cid if granted else None}], 1, 1)

    @staticmethod
    def field_visible(user: ApiUser, spec: Any) -> bool:
        """Reference §6: custom fields are dropped for a user without custom data access."""
        return spec.kind != "Custom" or "access all custom data" in user.permissions

    def select_rows(
        self, user: ApiUser, entity: str, where: Any, default_filters: bool = True
    ) -> list[Row]:
        pred = compile_where(self, entity, where or [])
        if (
            entity == "Contact"
            and default_filters
            and not mentions(where, "is_deleted")
            and not _unique_fetch(where)
        ):
            base = pred
            pred = lambda row: (base(row) is True and not row["is_deleted"]) or None  # noqa: E731
        acl = self._acl(user, entity)
        return [row for row in self.tables[entity].values() if pred(row) is True and acl(row)]

    def get(self, user: ApiUser, entity: str, params: dict[str, Any]) -> Result:
        for unsupported in ("join", "groupBy", "having"):
            if params.get(unsupported):
                raise ApiError(f"The fake CiviCRM does not implement '{unsupported}'")
        for name in _where_fields(params.get("where")):
            found = self.schema[entity].fields.get(name.partition(":")[0])
            if found is not None and not self.field_visible(user, found):
                raise ApiError(f"Invalid field '{name}'")  # as 6.17.2: a hidden custom field
        select = params.get("select") or []
        if not isinstance(select, list):
            raise ApiError("Invalid select")
        limit, offset = int(params.get("limit") or 0), int(params.get("offset") or 0)
        rows = sort_rows(
            self, entity, self.select_rows(user, entity, params.get("where")), params.get("orderBy")
        )
        total = len(rows)
        if select == ["row_count"]:
            return Result([], total, 0, total)
        page = rows[offset : offset + limit] if limit else rows[offset:]
        columns = expand_select(self, entity, select, set(user.permissions))
        values = [project(row, columns) for row in page]
        if params.get("chain"):
            self.run_chains(user, values, params["chain"])
        fetched = len(values)
        with_count = "row_count" in select
        if limit == 0 or fetched < limit:
            return Result(
                values, fetched + offset, fetched, fetched + offset if with_count else None
            )
        if with_count:
            return Result(values, total, fetched, total)
        return Result(values, fetched, fetched)

    def run_chains(self, user: ApiUser, values: list[Row], chain: dict[str, Any]) -> None:
        """§5 chaining: `{"key": [Entity, action, params]}` run per row, `$field` substituted."""
        for record in values:
            for key, call in chain.items():
                entity, action, sub = call[0], call[1], (call[2] if len(call) > 2 else {})
                result = self.run(user, entity, action, _substitute(sub, record))
                record[key] = result.values


def project(row: Row, columns: list[tuple[str, Any, Any]]) -> Row:
    out = {key: get(row) for key, get, _spec in columns}
    pruned = PRUNE.get(out.get("contact_type") or "")
    if pruned:
        for name in pruned:
            out.pop(name, None)
    return out


def _where_fields(where: Any) -> list[str]:
    """Every field name a where tree tests."""
    found: list[str] = []
    for clause in where if isinstance(where, list) else []:
        if not isinstance(clause, list) or not clause or not isinstance(clause[0], str):
            continue
        if clause[0].upper() in ("AND", "OR", "NOT") and len(clause) == 2:
            found += _where_fields(clause[1])
        else:
            found.append(clause[0])
    return found


def _options(options: dict[object, dict[str, str]] | None, load: Any) -> Any:
    if not options or not load:
        return bool(options)
    if isinstance(load, list):
        return [
            {"id": key, **{k: v for k, v in opt.items() if k in load}}
            for key, opt in options.items()
        ]
    return {str(key): opt.get("label") for key, opt in options.items()}


def _unique_fetch(where: Any) -> bool:
    """§3.5: a fetch by id/external_identifier (=, IN, plain LIKE) skips the trash filter."""
    for clause in where if isinstance(where, list) else []:
        if (
            isinstance(clause, list)
            and len(clause) >= 3
            and clause[0] in ("id", "external_identifier")
        ):
            op = str(clause[1]).upper()
            if op in ("=", "IN") or (
                op == "LIKE" and "%" not in str(clause[2]) and "_" not in str(clause[2])
            ):
                return True
    return False


def _substitute(value: Any, record: Row) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return record.get(value[1:], value)
    if isinstance(value, list):
        return [_substitute(v, record) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, record) for k, v in value.items()}
    return value


__all__ = ["ALL_PERMISSIONS", "ANONYMOUS", "ApiError", "ApiUser", "Result", "Store"]
