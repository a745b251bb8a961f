"""The fake's write actions: create, update, save (records, defaults, match), delete (§5)."""

from __future__ import annotations

from typing import Any

from .operators import ApiError, Row
from .query import expand_select
from .records import derive_names, new_contact, normalize
from .schema import LABEL_FIELD, LOCATION_JOINS
from .store import ApiUser, Result, Store, project

RESULT_EXTRAS = {"custom": None, "check_permissions": None}  # observed on 6.17.2


def write_action(
    store: Store, user: ApiUser, entity: str, action: str, params: dict[str, Any]
) -> Result:
    if action == "create":
        values = params.get("values")
        if not values:
            raise ApiError('Parameter "values" is required.')
        if "id" in values:
            raise ApiError("Cannot pass id to Create action. Use Update action instead.")
        out = [create(store, user, entity, dict(values))]
        return _finish(store, user, entity, out, params)
    if action == "update":
        values = params.get("values")
        if not values:
            raise ApiError('Parameter "values" is required.')
        where = params.get("where")
        if not where:
            if values.get("id") is None:
                raise ApiError(
                    'Parameter "where" is required unless primary keys are supplied in values.'
                )
            where = [["id", "=", values["id"]]]
        values = {k: v for k, v in values.items() if k != "id"}
        targets = store.select_rows(user, entity, where)
        out = [
            update(store, user, entity, row["id"], dict(values))
            for row in sorted(targets, key=lambda r: r["id"])
        ]
        return _finish(store, user, entity, out, params)
    if action == "save":
        return save(store, user, entity, params)
    if action == "delete":
        if not params.get("where"):
            raise ApiError('Parameter "where" is required.')
        targets = sorted(store.select_rows(user, entity, params["where"]), key=lambda r: r["id"])
        use_trash = params.get("useTrash", True) and store.trash_enabled
        for row in targets:
            if entity == "Contact":
                if not store.contact_editable(user, row["id"]):
                    raise ApiError("ACL check failed", status=403)
                if use_trash:
                    trash(store, row["id"])
                else:
                    store.hard_delete_contact(row["id"])
            else:
                _check_child_acl(store, user, entity, row)
                if entity == "GroupContact":
                    _history(store, row["group_id"], row["contact_id"], "Removed")
                store.remove(entity, row["id"])
        out = [{"id": row["id"]} for row in targets]
        return Result(out, len(out), len(out))
    raise ApiError(f"Api {entity} {action} version 4 does not exist.")


def _finish(
    store: Store,
    user: ApiUser,
    entity: str,
    out: list[Row],
    params: dict[str, Any],
    matched: int | None = None,
) -> Result:
    reload = params.get("reload")
    if reload:
        columns = expand_select(
            store, entity, ["*"] if reload is True else list(reload), set(user.permissions)
        )
        table = store.tables[entity]
        out = [project(table[r["id"]], columns) if r["id"] in table else r for r in out]
    if params.get("chain"):
        store.run_chains(user, out, params["chain"])
    return Result(out, len(out), len(out), matched)


def trash(store: Store, cid: int) -> None:
    row = store.tables["Contact"][cid]
    if not row["is_deleted"]:
        row["is_deleted"] = True
        if store.trash_bumps_modified:
            row["modified_date"] = store.now()


def _check_child_acl(store: Store, user: ApiUser, entity: str, row: Row) -> None:
    cid = row.get("entity_id") if entity == "EntityTag" else row.get("contact_id")
    if (
        cid is not None
        and entity in ("Email", "Phone", "Address", "EntityTag")
        and not store.contact_editable(user, cid)
    ):
        raise ApiError("ACL check failed", status=403)


def _split(store: Store, entity: str, values: Row) -> tuple[Row, dict[str, Row]]:
    """Separate plain field values from `email_primary.*`-style location values (Contact only)."""
    spec = store.schema[entity]
    plain: Row = {}
    locations: dict[str, Row] = {}
    for key, value in values.items():
        head, dot, rest = key.partition(".")
        if entity == "Contact" and dot and head in LOCATION_JOINS and "." not in rest:
            locations.setdefault(head, {})[rest] = value
            continue
        if (
            spec.fields.get(key.partition(":")[0])
            and spec.fields[key.partition(":")[0]].kind == "Custom"
        ) or not dot:
            norm = normalize(spec, key, value, store)
            if norm is not None:
                plain[norm[0]] = norm[1]
    return plain, locations


def _check_unique(store: Store, entity: str, row: Row, cid: int | None) -> None:
    if entity == "Contact" and row.get("external_identifier") is not None:
        for other in store.tables["Contact"].values():
            if other["external_identifier"] == row["external_identifier"] and other["id"] != cid:
                raise ApiError("DB Error: already exists")
    if entity == "GroupContact":
        if (
            row.get("group_id") not in store.tables["Group"]
            or row.get("contact_id") not in store.tables["Contact"]
        ):
            raise ApiError("DB Error: constraint violation")
        other_id = store.pairs.get((row["group_id"], row["contact_id"]))
        if other_id is not None and other_id != cid:
            raise ApiError("DB Error: already exists")
    if (
        entity in ("Email", "Phone", "Address")
        and row.get("contact_id") not in store.tables["Contact"]
    ):
        raise ApiError("DB Error: constraint violation")


def create(store: Store, user: ApiUser, entity: str, values: Row) -> Row:
    plain, locations = _split(store, entity, values)
    if entity == "Contact":
        if not {"add contacts", "access CiviCRM"} <= user.permissions:
            raise ApiError("ACL check failed", status=403)
        _check_unique(store, entity, plain, None)
        row = store.insert("Contact", new_contact(store, plain))
        if user.acl_contact_ids is not None:
            user.acl_contact_ids.add(row["id"])  # a user sees the contacts it creates
        out = {"id": row["id"], **plain}
        out.update(_save_locations(store, row["id"], locations))
        derive_names(store, row)
        out.update(
            display_name=row["display_name"],
            sort_name=row["sort_name"],
            contact_type=row["contact_type"],
        )
        return {**out, **RESULT_EXTRAS}
    spec = store.schema[entity]
    required = {
        "Email": ["email", "contact_id"],
        "Phone": ["phone", "contact_id"],
        "Address": ["contact_id"],
        "GroupContact": ["group_id", "contact_id"],
        "Group": ["title"],
        "Tag": ["name"],
        "EntityTag": ["entity_id", "tag_id"],
    }.get(entity, [])
    missing = [name for name in required if plain.get(name) in (None, "")]
    if missing:
        raise ApiError(f"Mandatory values missing from Api4 {entity}::create: {', '.join(missing)}")
    row = {name: None for name in spec.fields if spec.fields[name].kind == "Field"}
    row.update(_entity_defaults(store, entity, plain))
    row.update(plain)
    _check_child_acl(store, user, entity, row)
    _check_unique(store, entity, row, None)
    store.insert(entity, row)
    if entity == "GroupContact":
        _history(
            store, row["group_id"], row["contact_id"], row["status"], values.get("method", "API")
        )
    return {"id": row["id"], **plain, **RESULT_EXTRAS}


def _entity_defaults(store: Store, entity: str, plain: Row) -> Row:
    if entity in ("Email", "Phone", "Address"):
        base: Row = {"location_type_id": 1, "is_primary": False, "is_billing": False}
        if entity == "Email":
            base.update(on_hold=0, is_bulkmail=False)
        return base
    if entity == "GroupContact":
        return {"status": "Added"}
    if entity == "Group":
        title = plain.get("title") or ""
        return {
            "name": plain.get("name") or title.replace(" ", "_"),
            "is_active": True,
            "is_hidden": False,
            "is_reserved": False,
            "visibility": "User and User Admin Only",
            "group_type": None,
        }
    if entity == "Tag":
        return {
            "label": plain.get("name"),
            "is_selectable": True,
            "is_reserved": False,
            "is_tagset": False,
            "used_for": ["civicrm_contact"],
            "created_date": store.now(),
        }
    if entity == "EntityTag":
        return {"entity_table": "civicrm_contact"}
    return {}


def update(store: Store, user: ApiUser, entity: str, rid: int, values: Row) -> Row:
    table = store.tables[entity]
    if rid not in table:
        raise ApiError(f"Unable to find {entity} with id {rid}")
    plain, locations = _split(store, entity, values)
    row = table[rid]
    if entity == "Contact":
        if not store.contact_editable(user, rid):
            raise ApiError("ACL check failed", status=403)
        _check_unique(store, entity, {**row, **plain}, rid)
        changed = any(row.get(k) != v for k, v in plain.items())
        row.update(plain)
        derive_names(store, row)
        if changed:  # MySQL's ON UPDATE CURRENT_TIMESTAMP only fires when a column changes
            row["modified_date"] = store.now()
        out = {"id": rid, **plain}
        out.update(_save_locations(store, rid, locations))
        derive_names(store, row)
        return {**out, **RESULT_EXTRAS, "contact_id": None}
    _check_child_acl(store, user, entity, row)
    merged = {**row, **plain}
    _check_unique(store, entity, merged, rid)
    if entity == "GroupContact":
        if (merged["group_id"], merged["contact_id"]) != (row["group_id"], row["contact_id"]):
            store.pairs.pop((row["group_id"], row["contact_id"]), None)
            store.pairs[(merged["group_id"], merged["contact_id"])] = rid
        if merged["status"] != row["status"]:
            _history(
                store,
                merged["group_id"],
                merged["contact_id"],
                merged["status"],
                values.get("method", "API"),
            )
    row.update(plain)
    if entity in store.by_contact:
        store._primary_changed(entity, row)  # bumps the contact's modified_date (trigger)
    return {"id": rid, **plain, **RESULT_EXTRAS}


def _save_locations(store: Store, cid: int, locations: dict[str, Row]) -> Row:
    """ContactSaveTrait::saveLocations: `<Entity>.save` matched on contact_id + the flag."""
    out: Row = {}
    for join, values in locations.items():
        entity, flag = LOCATION_JOINS[join]
        spec = store.schema[entity]
        existing = store.loc_index[join].get(cid)
        label = LABEL_FIELD[entity]
        if (label in values and values[label] is None) or all(v is None for v in values.values()):
            if existing is not None:
                store.remove(entity, existing)
            out[join] = None
            continue
        plain = {}
        for key, value in values.items():
            norm = normalize(spec, key, value, store)
            if norm is not None and norm[0] not in ("contact_id", "is_primary", "is_billing"):
                plain[norm[0]] = norm[1]
        if existing is not None:
            row = store.tables[entity][existing]
            row.update(plain)
            store._primary_changed(entity, row)
        else:
            row = dict.fromkeys(spec.fields)
            row.update(_entity_defaults(store, entity, plain), contact_id=cid, **plain)
            row[flag] = True
            store.insert(entity, row)
        out[join] = row["id"]
        out[f"{join}.id"] = row["id"]
        out[f"{join}.contact_id"] = cid
        out.update({f"{join}.{k}": v for k, v in values.items()})
    return out


def save(store: Store, user: ApiUser, entity: str, params: dict[str, Any]) -> Result:
    records = params.get("records")
    if not records:
        raise ApiError('Parameter "records" is required.')
    defaults = params.get("defaults") or {}
    match = params.get("match") or []
    out: list[Row] = []
    matched = 0
    for record in records:
        record = {**defaults, **record}
        rid = record.pop("id", None)
        if rid is None and match:
            where = [
                [f, "=", record[f]] if record.get(f) not in (None, "") else [f, "IS EMPTY"]
                for f in match
            ]
            found = sorted(store.select_rows(user, entity, where), key=lambda r: r["id"])[:2]
            if len(found) == 1:  # §5: 0 or 2+ matches silently create
                rid = found[0]["id"]
        if rid is not None:
            out.append(update(store, user, entity, int(rid), record))
            matched += 1
        else:
            out.append(create(store, user, entity, record))
    return _finish(store, user, entity, out, params, matched)


def _history(store: Store, gid: int, cid: int, status: str, method: str = "API") -> None:
    store.insert(
        "SubscriptionHistory",
        {
            "contact_id": cid,
            "group_id": gid,
            "date": store.now(),
            "method": method,
            "status": status,
            "tracking": None,
        },
    )
