"""Contract tests: the fake CiviCRM against the reference (civicrm-apiv4.md), via plain requests."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from connector_civicrm.testing import FakeCiviCRM, FaultRule, Faults

KEY = "6f2c0d1e9b7a4c35"
SITE = "sitekey"


@pytest.fixture
def fake() -> Iterator[FakeCiviCRM]:
    with FakeCiviCRM(api_key=KEY, site_key=SITE) as server:
        server.freeze_time("2025-03-01 10:00:00")
        yield server


def call(
    fake: FakeCiviCRM,
    entity: str,
    action: str,
    params: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    timeout: float = 5,
    **data: str,
) -> requests.Response:
    hdrs = {"X-Civi-Auth": f"Bearer {KEY}"} if headers is None else headers
    fields = dict(data)
    if params is not None:
        fields["params"] = json.dumps(params)
    url = fake.api_url(entity, action)
    if method == "GET":
        return requests.get(url, params=fields, headers=hdrs, timeout=timeout)
    return requests.post(url, data=fields, headers=hdrs, timeout=timeout)


def ok(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


@pytest.fixture
def people(fake: FakeCiviCRM) -> dict[str, int]:
    """The Appendix A cast: Ada (3 in the reference), Grace, Alan, an org and a trashed record."""
    ids = {
        "ada": fake.add_contact(
            first_name="Ada",
            last_name="Lovelace",
            email="ada@example.org",
            **{"address_primary.city": "London", "address_primary.country_id": 1226},
            preferred_communication_method=["2"],
            external_identifier="nc-1",
        ),
        "grace": fake.add_contact(
            first_name="Grace", last_name="Hopper", email="grace@example.org", is_opt_out=True
        ),
        "alan": fake.add_contact(
            first_name="Alan",
            last_name="Turing",
            email="alan@example.org",
            phone="+44 161 0000",
            do_not_email=True,
            **{"address_primary.city": "Manchester", "address_primary.country_id": 1226},
        ),
        "org": fake.add_contact(contact_type="Organization", organization_name="Bike Kitchen"),
        "old": fake.add_contact(first_name="Old", last_name="Record", external_identifier="nc-old"),
    }
    fake.trash(ids["old"])
    return ids


# ---- envelope ---------------------------------------------------------------------------------


def test_envelope_key_order_and_content_type(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    resp = call(
        fake,
        "Contact",
        "get",
        {"select": ["id", "display_name"], "where": [["id", "=", people["ada"]]]},
    )
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.text == (
        f'{{"values":[{{"id":{people["ada"]},"display_name":"Ada Lovelace"}}],"entity":"Contact",'
        '"action":"get","debug":null,"version":4,"count":1,"countFetched":1}'
    )


def test_select_prepends_id_drops_unknown_and_prunes_by_contact_type(
    fake: FakeCiviCRM, people: dict[str, int]
) -> None:
    body = ok(
        call(
            fake,
            "Contact",
            "get",
            {
                "select": ["contact_type", "first_name", "organization_name", "nope"],
                "orderBy": {"id": "ASC"},
            },
        )
    )
    ada, org = body["values"][0], body["values"][3]
    assert list(ada) == [
        "id",
        "contact_type",
        "first_name",
    ]  # organization_name pruned, nope dropped
    assert list(org) == ["id", "contact_type", "organization_name"]


def test_star_select_has_standard_fields_but_no_joins_or_api_key(
    fake: FakeCiviCRM, people: dict[str, int]
) -> None:
    row = ok(call(fake, "Contact", "get", {"where": [["id", "=", people["ada"]]]}))["values"][0]
    assert row["display_name"] == "Ada Lovelace"
    assert row["is_deleted"] is False
    assert "email_primary" not in row
    assert "api_key" in row  # the default key has `edit api keys`
    assert row["modified_date"] == "2025-03-01 10:00:00"


@pytest.mark.parametrize(
    ("limit", "offset", "row_count", "expected"),
    [
        (2, 0, False, (2, 2, None)),
        (2, 2, False, (3, 1, None)),
        (2, 0, True, (3, 2, 3)),
        (0, 0, False, (3, 3, None)),
        (0, 0, True, (3, 3, 3)),
        (10, 0, False, (3, 3, None)),
        (25, 100, False, (100, 0, None)),
    ],
    ids=[
        "full-page",
        "last-page",
        "full-page-row-count",
        "unlimited",
        "unlimited-row-count",
        "ineffective",
        "offset-past-end",
    ],
)
def test_counts(
    fake: FakeCiviCRM,
    people: dict[str, int],
    limit: int,
    offset: int,
    row_count: bool,
    expected: tuple[int, int, int | None],
) -> None:
    select = ["id", "row_count"] if row_count else ["id"]
    params = {
        "select": select,
        "where": [["contact_type", "=", "Individual"]],
        "orderBy": {"id": "ASC"},
        "limit": limit,
        "offset": offset,
    }
    body = ok(call(fake, "Contact", "get", params))
    assert (body["count"], body["countFetched"], body.get("countMatched")) == expected


def test_count_only(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    body = ok(
        call(
            fake,
            "Contact",
            "get",
            {"select": ["row_count"], "where": [["contact_type", "=", "Individual"]]},
        )
    )
    assert body == {
        "values": [],
        "entity": "Contact",
        "action": "get",
        "debug": None,
        "version": 4,
        "count": 3,
        "countFetched": 0,
        "countMatched": 3,
    }


@pytest.mark.parametrize(
    ("index", "expected"), [("id", dict), ("0", dict)], ids=["string-index", "int-index"]
)
def test_index(fake: FakeCiviCRM, people: dict[str, int], index: str, expected: type) -> None:
    body = ok(
        call(fake, "Contact", "get", {"select": ["id"], "orderBy": {"id": "ASC"}}, index=index)
    )
    assert isinstance(body["values"], expected)
    if index == "id":
        assert set(body["values"]) == {str(people[k]) for k in ("ada", "grace", "alan", "org")}
    else:
        assert body["values"] == {"id": people["ada"]}


def test_no_order_by_is_not_id_order(fake: FakeCiviCRM) -> None:
    fake.seed_contacts(50)
    ids = [r["id"] for r in ok(call(fake, "Contact", "get", {"select": ["id"]}))["values"]]
    assert sorted(ids) == list(range(1, 51))
    assert ids != sorted(ids)


# ---- where ------------------------------------------------------------------------------------

WHERE_CASES = [
    ("eq", [["last_name", "=", "Hopper"]], ["grace"]),
    ("eq-case-insensitive", [["last_name", "=", "hopper"]], ["grace"]),
    ("ne", [["last_name", "!=", "Hopper"]], ["ada", "alan"]),
    ("ne-angle", [["last_name", "<>", "Hopper"]], ["ada", "alan"]),
    ("gt", [["first_name", ">", "Ada"]], ["grace", "alan"]),
    ("ge", [["first_name", ">=", "Alan"]], ["grace", "alan"]),
    ("lt", [["first_name", "<", "Alan"]], ["ada"]),
    ("le", [["first_name", "<=", "Alan"]], ["ada", "alan"]),
    ("in", [["first_name", "IN", ["Ada", "Alan"]]], ["ada", "alan"]),
    ("in-empty", [["first_name", "IN", []]], []),
    ("not-in", [["first_name", "NOT IN", ["Ada"]]], ["grace", "alan"]),
    ("like", [["last_name", "LIKE", "Love%"]], ["ada"]),
    ("like-underscore", [["first_name", "LIKE", "A_a"]], ["ada"]),
    ("not-like", [["last_name", "NOT LIKE", "%o%"]], ["alan"]),
    ("is-null", [["email_primary.email", "IS NULL"]], ["org"]),
    ("is-not-null", [["phone_primary.phone", "IS NOT NULL"]], ["alan"]),
    ("is-empty", [["external_identifier", "IS EMPTY"]], ["grace", "alan", "org"]),
    ("is-not-empty", [["external_identifier", "IS NOT EMPTY"]], ["ada"]),
    ("contains-string", [["email_primary.email", "CONTAINS", "ce@exa"]], ["grace"]),
    ("contains-serialized", [["preferred_communication_method", "CONTAINS", "2"]], ["ada"]),
    (
        "not-contains-matches-null",
        [["preferred_communication_method", "NOT CONTAINS", "2"]],
        ["grace", "alan", "org"],
    ),
    (
        "contains-one-of",
        [["email_primary.email", "CONTAINS ONE OF", ["ada@", "alan@"]]],
        ["ada", "alan"],
    ),
    ("not-contains-one-of", [["first_name", "NOT CONTAINS ONE OF", ["d", "n"]]], ["grace", "org"]),
    ("between", [["first_name", "BETWEEN", ["Ab", "Az"]]], ["ada", "alan"]),
    ("not-between", [["first_name", "NOT BETWEEN", ["Ab", "Az"]]], ["grace"]),
    ("regexp", [["last_name", "REGEXP", "^(h|t)"]], ["grace", "alan"]),
    ("not-regexp", [["last_name", "NOT REGEXP", "^h"]], ["ada", "alan"]),
    ("regexp-binary", [["last_name", "REGEXP BINARY", "^h"]], []),
    ("not-regexp-binary", [["last_name", "NOT REGEXP BINARY", "^h"]], ["ada", "grace", "alan"]),
    ("bool-true", [["is_opt_out", "=", True]], ["grace"]),
    ("bool-int", [["do_not_email", "=", 1]], ["alan"]),
    ("bool-in", [["is_opt_out", "IN", [0]], ["contact_type", "=", "Individual"]], ["ada", "alan"]),
    ("suffix-abbr", [["address_primary.country_id:abbr", "=", "GB"]], ["ada", "alan"]),
    ("suffix-name", [["contact_type:name", "=", "Organization"]], ["org"]),
    ("null-never-equals", [["first_name", "!=", "Ada"], ["contact_type", "=", "Organization"]], []),
    ("expression", [["created_date", "=", "modified_date", True]], ["ada", "grace", "alan", "org"]),
    ("or", [["OR", [["first_name", "=", "Ada"], ["last_name", "=", "Turing"]]]], ["ada", "alan"]),
    (
        "and-in-or",
        [
            [
                "OR",
                [
                    ["AND", [["first_name", "=", "Ada"], ["is_opt_out", "=", False]]],
                    ["is_opt_out", "=", True],
                ],
            ]
        ],
        ["ada", "grace"],
    ),
    (
        "not",
        [["NOT", [["first_name", "=", "Ada"]]], ["contact_type", "=", "Individual"]],
        ["grace", "alan"],
    ),
    (
        "not-is-and",
        [["NOT", [["first_name", "=", "Ada"], ["last_name", "=", "Lovelace"]]]],
        ["grace", "alan"],
    ),
    ("not-null-is-unknown", [["NOT", [["first_name", "=", "Ada"]]]], ["grace", "alan"]),
]


@pytest.mark.parametrize(
    ("where", "expected"), [c[1:] for c in WHERE_CASES], ids=[c[0] for c in WHERE_CASES]
)
def test_where_operators(
    fake: FakeCiviCRM, people: dict[str, int], where: list[Any], expected: list[str]
) -> None:
    body = ok(
        call(fake, "Contact", "get", {"select": ["id"], "where": where, "orderBy": {"id": "ASC"}})
    )
    assert [r["id"] for r in body["values"]] == sorted(people[k] for k in expected)


def test_timestamp_where(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    fake.advance(3600)
    fake.update_contact(people["alan"], first_name="Alan M.")
    cases = {
        ">=": ("2025-03-01 11:00:00", ["alan"]),
        ">": ("2025-03-01T10:00:00+00:00", ["alan"]),
        "=": ("2025-03-01", ["ada", "grace", "alan", "org"]),  # a bare date means the whole day
        "<": ("20250301103000", ["ada", "grace", "org"]),
    }
    for op, (value, names) in cases.items():
        body = ok(
            call(
                fake,
                "Contact",
                "get",
                {
                    "select": ["id"],
                    "where": [["modified_date", op, value]],
                    "orderBy": {"id": "ASC"},
                },
            )
        )
        assert [r["id"] for r in body["values"]] == sorted(people[k] for k in names), op


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"where": [["nonexistent_field", "=", 1]]}, "Invalid field 'nonexistent_field'"),
        ({"where": [["id", "EQUALS", 1]]}, "Illegal operator"),
        ({"where": [["groups", "=", 1]]}, "Illegal operator for groups"),
        ({"limitt": 5}, "Unknown api parameter: setLimitt"),
        ({"orderBy": {"sort_name": "UP"}}, "Invalid sort direction. Cannot order by sort_name UP"),
        ({"orderBy": {"foo": "ASC"}}, "Invalid field 'foo'"),
    ],
    ids=[
        "invalid-field",
        "illegal-operator",
        "groups-operator",
        "unknown-param",
        "sort-direction",
        "order-field",
    ],
)
def test_get_errors_detailed(fake: FakeCiviCRM, params: dict[str, Any], message: str) -> None:
    resp = call(fake, "Contact", "get", params)
    assert resp.status_code == 500
    body = resp.json()
    assert list(body) == ["error_id", "error_code", "error_message", "status"]
    assert body["error_code"] == 0
    assert body["error_message"] == message
    assert body["status"] == 500
    assert len(body["error_id"]) == 14
    assert body["error_id"].count("-") == 2


@pytest.mark.parametrize(
    ("entity", "action", "params", "message"),
    [
        (
            "Frobnicator",
            "get",
            {},
            "API (Frobnicator, get) does not exist "
            "(or the extension it belongs to is not enabled).",
        ),
        ("Contact", "frobnicate", {}, "Api Contact frobnicate version 4 does not exist."),
        ("Contact", "delete", {}, 'Parameter "where" is required.'),
        ("Contact", "update", {"where": [["id", "=", 1]]}, 'Parameter "values" is required.'),
        (
            "Contact",
            "update",
            {"values": {"first_name": "x"}},
            'Parameter "where" is required unless primary keys are supplied in values.',
        ),
        (
            "Email",
            "create",
            {"values": {"contact_id": 1}},
            "Mandatory values missing from Api4 Email::create: email",
        ),
        (
            "Contact",
            "create",
            {"values": {"id": 5}},
            "Cannot pass id to Create action. Use Update action instead.",
        ),
    ],
    ids=[
        "unknown-entity",
        "unknown-action",
        "delete-no-where",
        "update-no-values",
        "update-no-where",
        "mandatory",
        "create-with-id",
    ],
)
def test_action_errors(
    fake: FakeCiviCRM, entity: str, action: str, params: dict[str, Any], message: str
) -> None:
    resp = call(fake, entity, action, params)
    assert resp.status_code == 500
    assert resp.json()["error_message"] == message


def test_generic_error_body_without_debug_permission(fake: FakeCiviCRM) -> None:
    fake.add_api_key(
        "plain", permissions={"access CiviCRM", "view all contacts", "authenticate with api key"}
    )
    resp = call(
        fake,
        "Contact",
        "get",
        {"where": [["foo", "=", 1]]},
        headers={"X-Civi-Auth": "Bearer plain"},
    )
    body = resp.json()
    assert resp.status_code == 500
    assert body["error_code"] == "1"
    assert body["status"] == 500
    assert body["error_message"].startswith(
        "Sorry an error occurred and your request was not completed. (Error ID: "
    )


def test_pre_6_9_has_no_error_id() -> None:
    with FakeCiviCRM(api_key=KEY, version=(6, 8)) as old:
        assert "error_id" not in call(old, "Contact", "get", {"where": [["foo", "=", 1]]}).json()


# ---- auth and transport ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        ({}, 400, "SECURITY ALERT"),
        ({"X-Civi-Auth": "Bearer wrongkey"}, 401, "HTTP 401 Invalid credential"),
        (
            {"X-Civi-Auth": "Basic dXNlcjpwYXNz"},
            401,
            'HTTP 401 Authentication type "pass" with flow "xheader"',
        ),
        ({"Authorization": f"Bearer {KEY}"}, 400, "SECURITY ALERT"),
        (
            {"Authorization": f"Bearer {KEY}", "X-Requested-With": "XMLHttpRequest"},
            200,
            '"count":1',
        ),
        ({"X-Civi-Auth": f"Bearer {KEY}"}, 200, '"count":1'),
        ({"X-Requested-With": "XMLHttpRequest"}, 200, '"count":0'),
    ],
    ids=[
        "no-auth",
        "wrong-key",
        "basic-in-xheader",
        "authorization-without-xrw",
        "authorization-with-xrw",
        "xheader",
        "anonymous",
    ],
)
def test_auth(
    fake: FakeCiviCRM, people: dict[str, int], headers: dict[str, str], status: int, body: str
) -> None:
    resp = call(
        fake,
        "Contact",
        "get",
        {"select": ["id"], "where": [["id", "=", people["ada"]]]},
        headers=headers,
    )
    assert resp.status_code == status
    assert body in resp.text
    if status == 401:
        assert resp.headers["Content-Type"] == "text/plain"
        assert "SESSCIVISO" in resp.headers["Set-Cookie"]


def test_guard_needs_site_key_without_perm(fake: FakeCiviCRM) -> None:
    fake.add_api_key("nonadmin", permissions={"access CiviCRM", "view all contacts"})
    resp = call(fake, "Contact", "get", {}, headers={"X-Civi-Auth": "Bearer nonadmin"})
    assert resp.status_code == 401
    assert resp.text == "HTTP 401 Login not permitted. Must satisfy guard (site_key, perm)."
    resp = call(
        fake, "Contact", "get", {}, headers={"X-Civi-Auth": "Bearer nonadmin", "X-Civi-Key": SITE}
    )
    assert resp.status_code == 200


def test_jwt_and_expiry(fake: FakeCiviCRM) -> None:
    token = fake.mint_jwt()
    assert (
        call(fake, "Contact", "get", {}, headers={"X-Civi-Auth": f"Bearer {token}"}).status_code
        == 200
    )
    expired = fake.mint_jwt(ttl=-1)
    resp = call(fake, "Contact", "get", {}, headers={"X-Civi-Auth": f"Bearer {expired}"})
    assert resp.status_code == 401
    assert resp.text == "HTTP 401 Expired token"


def test_authx_param_and_legacy_rest(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    assert (
        ok(call(fake, "Contact", "get", {"select": ["id"]}, headers={}, _authx=f"Bearer {KEY}"))[
            "count"
        ]
        == 4
    )
    assert (
        ok(call(fake, "Contact", "get", {"select": ["id"]}, headers={}, api_key=KEY, key=SITE))[
            "count"
        ]
        == 4
    )
    resp = call(fake, "Contact", "get", {}, headers={}, api_key="bad", key=SITE)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/javascript"
    assert resp.json() == {"error_message": "FATAL: Invalid credential", "is_error": 1}


def test_authorization_header_disabled_is_anonymous(
    fake: FakeCiviCRM, people: dict[str, int]
) -> None:
    fake.authx_header_cred = False
    headers = {"Authorization": f"Bearer {KEY}", "X-Requested-With": "XMLHttpRequest"}
    assert ok(call(fake, "Contact", "get", {}, headers=headers))["count"] == 0


def test_get_is_allowed_but_writes_need_post(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    assert ok(call(fake, "Contact", "get", {"select": ["id"]}, method="GET"))["count"] == 4
    assert (
        ok(call(fake, "Contact", "get", {"select": ["id"]}, method="GET", limit="2"))["count"] == 2
    )  # 6.10+
    resp = call(fake, "Contact", "create", {"values": {"first_name": "x"}}, method="GET")
    assert resp.status_code == 405
    assert resp.json() == {
        "error_code": 405,
        "error_message": "SECURITY: All requests that modify the database must be http POST, "
        "not GET.",
    }


def test_json_body_is_ignored(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    resp = requests.post(
        fake.api_url("Contact", "get"),
        json={"select": ["id"], "limit": 1},
        headers={"X-Civi-Auth": f"Bearer {KEY}"},
        timeout=5,
    )
    body = ok(resp)
    assert body["count"] == 4
    assert "display_name" in body["values"][0]  # every field, no limit


def test_invalid_json_params_is_html_500(fake: FakeCiviCRM) -> None:
    resp = requests.post(
        fake.api_url("Contact", "get"),
        data={"params": "{nope"},
        headers={"X-Civi-Auth": f"Bearer {KEY}"},
        timeout=5,
    )
    assert resp.status_code == 500
    assert resp.headers["Content-Type"].startswith("text/html")


def test_check_permissions_is_stripped(fake: FakeCiviCRM) -> None:
    fake.add_api_key(
        "viewer", permissions={"access CiviCRM", "authenticate with api key", "view debug output"}
    )
    resp = call(
        fake,
        "Contact",
        "create",
        {"values": {"first_name": "x"}, "checkPermissions": False},
        headers={"X-Civi-Auth": "Bearer viewer"},
    )
    assert resp.status_code == 403
    assert resp.json()["error_message"] == "Authorization failed: CiviCRM APIv4 (Contact::create)"


def test_maintenance_mode(fake: FakeCiviCRM) -> None:
    fake.maintenance_mode = True
    resp = call(fake, "Contact", "get", {})
    assert resp.status_code == 503
    assert resp.json() == {
        "status_code": 503,
        "status_message": "Temporarily unavailable for maintenance.",
    }


def test_acl_limits_visible_contacts(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    fake.add_api_key(
        "acl",
        permissions={"access CiviCRM", "authenticate with api key", "view debug output"},
        acl_contact_ids={people["ada"], people["old"]},
    )
    headers = {"X-Civi-Auth": "Bearer acl"}
    body = ok(
        call(
            fake,
            "Contact",
            "get",
            {"select": ["id"], "where": [["is_deleted", "IN", [0, 1]]]},
            headers=headers,
        )
    )
    assert [r["id"] for r in body["values"]] == [
        people["ada"]
    ]  # trash hidden without `access deleted contacts`
    assert ok(call(fake, "Email", "get", {"select": ["email"]}, headers=headers))["count"] == 1
    resp = call(
        fake,
        "Contact",
        "update",
        {"where": [["id", "=", people["ada"]]], "values": {"first_name": "A"}},
        headers=headers,
    )
    assert resp.status_code == 200


@pytest.mark.parametrize(
    ("style", "template"),
    [
        ("standalone", "/civicrm/ajax/api4/Contact/get"),
        ("drupal8", "/civicrm/ajax/api4/Contact/get"),
        ("drupal7", "/?q=civicrm/ajax/api4/Contact/get"),
        ("drupal7", "/civicrm/ajax/api4/Contact/get"),
        ("wordpress", "/?civiwp=CiviCRM&q=civicrm/ajax/api4/Contact/get"),
        ("wordpress", "/civicrm/ajax/api4/Contact/get/"),
        (
            "joomla",
            "/administrator/index.php?option=com_civicrm&task=civicrm/ajax/api4/Contact/get",
        ),
    ],
    ids=[
        "standalone",
        "drupal8",
        "drupal7-q",
        "drupal7-clean",
        "wordpress-front",
        "wordpress-clean",
        "joomla",
    ],
)
def test_url_styles(style: str, template: str) -> None:
    with FakeCiviCRM(api_key=KEY, url_style=style) as server:
        resp = requests.post(
            server.base_url + template,
            data={"params": "{}"},
            headers={"X-Civi-Auth": f"Bearer {KEY}"},
            timeout=5,
        )
        assert ok(resp)["entity"] == "Contact"
        assert ok(call(server, "Contact", "get", {}))["action"] == "get"


@pytest.mark.parametrize(
    ("style", "path", "status"),
    [
        ("standalone", "/?q=civicrm/ajax/api4/Contact/get", 404),
        ("joomla", "/civicrm/ajax/api4/Contact/get", 404),
        ("wordpress", "/?page=CiviCRM&q=civicrm/ajax/api4/Contact/get", 301),
        ("wordpress", "/wp-admin/admin.php?page=CiviCRM&q=civicrm/ajax/api4/Contact/get", 302),
    ],
    ids=["standalone-q", "joomla-path", "wordpress-page-redirect", "wordpress-admin-login"],
)
def test_wrong_url_forms(style: str, path: str, status: int) -> None:
    with FakeCiviCRM(api_key=KEY, url_style=style) as server:
        resp = requests.post(
            server.base_url + path,
            headers={"X-Civi-Auth": f"Bearer {KEY}"},
            timeout=5,
            allow_redirects=False,
        )
        assert resp.status_code == status


def test_multi_call(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    calls = [["Contact", "get", {"select": ["id"], "limit": 1}], ["Contact", "frobnicate", {}]]
    resp = requests.post(
        fake.api_url(),
        data={"calls": json.dumps(calls)},
        headers={"X-Civi-Auth": f"Bearer {KEY}"},
        timeout=5,
    )
    body = resp.json()
    assert resp.status_code == 200
    assert body[0]["count"] == 1
    assert body[1]["status"] == 500


# ---- trash, joins, paging ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "trashed_visible"),
    [
        ([], False),
        ([["is_deleted", "IN", [0, 1]]], True),
        ([["OR", [["is_deleted", "=", 1], ["id", "=", 0]]]], True),
        ([["external_identifier", "=", "nc-old"]], True),
        ([["external_identifier", "LIKE", "nc-%"]], False),
        ([["last_name", "=", "Record"]], False),
    ],
    ids=[
        "default",
        "is-deleted-in-where",
        "is-deleted-nested",
        "by-external-id",
        "wildcard-like",
        "other-field",
    ],
)
def test_trash_default_filter(
    fake: FakeCiviCRM, people: dict[str, int], where: list[Any], trashed_visible: bool
) -> None:
    ids = [
        r["id"]
        for r in ok(call(fake, "Contact", "get", {"select": ["id"], "where": where}))["values"]
    ]
    assert (people["old"] in ids) is trashed_visible


def test_implicit_joins(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    select = [
        "id",
        "email_primary.email",
        "phone_primary.phone",
        "address_primary.city",
        "address_primary.country_id:abbr",
        "preferred_communication_method:name",
        "address_primary.*",
    ]
    rows = ok(call(fake, "Contact", "get", {"select": select, "orderBy": {"id": "ASC"}}))["values"]
    ada, grace = rows[0], rows[1]
    assert ada["email_primary.email"] == "ada@example.org"
    assert ada["address_primary.country_id:abbr"] == "GB"
    assert ada["preferred_communication_method:name"] == ["Email"]
    assert ada["address_primary.postal_code"] is None
    assert grace["phone_primary.phone"] is None
    assert grace["address_primary.city"] is None
    emails = ok(
        call(
            fake,
            "Email",
            "get",
            {
                "select": ["email", "contact_id.display_name", "location_type_id:name"],
                "where": [["contact_id", "=", people["ada"]]],
            },
        )
    )["values"]
    assert emails == [
        {
            "id": emails[0]["id"],
            "email": "ada@example.org",
            "contact_id.display_name": "Ada Lovelace",
            "location_type_id:name": "Home",
        }
    ]


def test_keyset_and_offset_paging_10k(fake: FakeCiviCRM) -> None:
    fake.seed_contacts(10_000, random.Random(7))
    select = [
        "id",
        "display_name",
        "email_primary.email",
        "phone_primary.phone",
        "address_primary.city",
    ]
    seen: list[int] = []
    last = 0
    while True:
        body = ok(
            call(
                fake,
                "Contact",
                "get",
                {
                    "select": select,
                    "where": [["id", ">", last]],
                    "orderBy": {"id": "ASC"},
                    "limit": 500,
                },
            )
        )
        seen += [r["id"] for r in body["values"]]
        if body["countFetched"] < 500:
            break
        last = seen[-1]
    assert seen == list(range(1, 10001))
    assert fake.count_requests("Contact", "get") == 21
    page = ok(
        call(
            fake,
            "Contact",
            "get",
            {"select": ["id"], "orderBy": {"id": "ASC"}, "limit": 3, "offset": 9_998},
        )
    )
    assert [r["id"] for r in page["values"]] == [9999, 10000]
    assert page["count"] == 10000


def test_groups_and_tags_filters(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    news = fake.add_group("Newsletter")
    fake.set_membership(people["ada"], news)
    fake.set_membership(people["grace"], news, "Pending")
    parent = fake.add_tag("Donor")
    child = fake.add_tag("Major Donor", parent_id=parent)
    fake.tag(people["alan"], child)

    def get(where: list[Any]) -> list[int]:
        body = ok(call(fake, "Contact", "get", {"select": ["id"], "where": where}))
        return [r["id"] for r in body["values"]]

    assert get([["groups", "IN", [news]]]) == [people["ada"]]  # only Added counts
    assert get([["groups:name", "IN", ["Newsletter"]]]) == [people["ada"]]
    assert get([["tags", "IN", [parent]]]) == [people["alan"]]  # child tags included


# ---- writes ----------------------------------------------------------------------


def test_create_returns_partial_record(fake: FakeCiviCRM) -> None:
    values = {
        "contact_type": "Individual",
        "first_name": "Katherine",
        "last_name": "Johnson",
        "external_identifier": "nc-8841",
        "email_primary.email": "kj@example.org",
        "do_not_phone": True,
    }
    row = ok(call(fake, "Contact", "create", {"values": values}))["values"][0]
    assert row["display_name"] == "Katherine Johnson"
    assert row["sort_name"] == "Johnson, Katherine"
    assert row["email_primary"] == row["email_primary.id"]
    assert row["email_primary.contact_id"] == row["id"]
    assert row["email_primary.email"] == "kj@example.org"
    assert row["do_not_phone"] is True
    resp = call(
        fake,
        "Contact",
        "create",
        {"values": {"first_name": "Dup", "external_identifier": "nc-8841"}},
    )
    assert resp.status_code == 500
    assert resp.json()["error_message"] == "DB Error: already exists"


def test_update_and_reload(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    fake.advance(60)
    body = ok(
        call(
            fake,
            "Contact",
            "update",
            {
                "where": [["id", "=", people["ada"]]],
                "values": {"is_opt_out": True, "do_not_email": True},
            },
        )
    )
    assert body["values"][0]["is_opt_out"] is True
    assert body["count"] == 1
    body = ok(
        call(
            fake,
            "Contact",
            "update",
            {"values": {"id": people["ada"], "nick_name": "A"}, "reload": ["id", "modified_date"]},
        )
    )
    assert body["values"] == [{"id": people["ada"], "modified_date": "2025-03-01 10:01:00"}]


def test_save_match_updates_single_match_and_creates_on_ambiguity(
    fake: FakeCiviCRM, people: dict[str, int]
) -> None:
    records = [
        {"external_identifier": "nc-1", "first_name": "Augusta"},
        {"external_identifier": "nc-9000", "first_name": "Dorothy", "last_name": "Vaughan"},
    ]
    body = ok(
        call(
            fake,
            "Contact",
            "save",
            {
                "records": records,
                "match": ["external_identifier"],
                "reload": ["id", "external_identifier", "display_name"],
            },
        )
    )
    assert body["values"][0] == {
        "id": people["ada"],
        "external_identifier": "nc-1",
        "display_name": "Augusta Lovelace",
    }
    assert body["values"][1]["display_name"] == "Dorothy Vaughan"
    assert body["countMatched"] == 1
    # the §5 quirk: two matches (or none) silently create a new record
    fake.add_contact(first_name="Grace", last_name="Twin")
    before = len(fake.store.tables["Contact"])
    body = ok(
        call(
            fake,
            "Contact",
            "save",
            {"records": [{"first_name": "Grace", "last_name": "New"}], "match": ["first_name"]},
        )
    )
    assert body["countMatched"] == 0
    assert len(fake.store.tables["Contact"]) == before + 1


def test_save_match_hits_trashed_by_external_identifier(
    fake: FakeCiviCRM, people: dict[str, int]
) -> None:
    body = ok(
        call(
            fake,
            "Contact",
            "save",
            {
                "records": [{"external_identifier": "nc-old", "first_name": "X"}],
                "match": ["external_identifier"],
            },
        )
    )
    assert body["values"][0]["id"] == people["old"]
    assert body["countMatched"] == 1


def test_save_batch_with_ids_defaults_and_locations(
    fake: FakeCiviCRM, people: dict[str, int]
) -> None:
    records = [
        {"id": people["grace"], "email_primary.email": "g@navy.example"},
        {"first_name": "New"},
    ]
    body = ok(call(fake, "Contact", "save", {"records": records, "defaults": {"source": "sync"}}))
    assert body["count"] == 2
    assert body["countMatched"] == 1
    rows = ok(
        call(
            fake,
            "Contact",
            "get",
            {
                "select": ["source", "email_primary.email"],
                "where": [["source", "=", "sync"]],
                "orderBy": {"id": "ASC"},
            },
        )
    )["values"]
    assert [r["email_primary.email"] for r in rows] == ["g@navy.example", None]
    ok(
        call(
            fake,
            "Contact",
            "save",
            {"records": [{"id": people["grace"], "email_primary.email": None}]},
        )
    )
    assert fake.store.loc_index["email_primary"].get(people["grace"]) is None  # null label deletes


@pytest.mark.parametrize(
    ("use_trash", "remaining"), [(None, True), (False, False)], ids=["trash", "permanent"]
)
def test_delete(
    fake: FakeCiviCRM, people: dict[str, int], use_trash: bool | None, remaining: bool
) -> None:
    params: dict[str, Any] = {"where": [["id", "=", people["alan"]]]}
    if use_trash is not None:
        params["useTrash"] = use_trash
    fake.advance(5)
    body = ok(call(fake, "Contact", "delete", params))
    assert body == {
        "values": [{"id": people["alan"]}],
        "entity": "Contact",
        "action": "delete",
        "debug": None,
        "version": 4,
        "count": 1,
        "countFetched": 1,
    }
    row = fake.contact(people["alan"])
    assert (row is not None) is remaining
    if row:
        assert row["is_deleted"] is True
        assert row["modified_date"] == "2025-03-01 10:00:05"  # 6.7+
    else:
        assert (
            ok(call(fake, "Email", "get", {"where": [["contact_id", "=", people["alan"]]]}))[
                "count"
            ]
            == 0
        )


def test_group_contact_lifecycle_does_not_bump_modified_date(
    fake: FakeCiviCRM, people: dict[str, int]
) -> None:
    gid = ok(
        call(fake, "Group", "create", {"values": {"name": "Newsletter", "title": "Newsletter"}})
    )["values"][0]["id"]
    fake.advance(120)
    ok(
        call(
            fake,
            "GroupContact",
            "create",
            {"values": {"group_id": gid, "contact_id": people["ada"], "status": "Pending"}},
        )
    )
    dup = call(
        fake, "GroupContact", "create", {"values": {"group_id": gid, "contact_id": people["ada"]}}
    )
    assert dup.status_code == 500
    assert dup.json()["error_message"] == "DB Error: already exists"
    bad = call(
        fake,
        "GroupContact",
        "create",
        {"values": {"group_id": "Newsletter", "contact_id": people["ada"]}},
    )
    assert bad.status_code == 500
    assert "constraint violation" in bad.json()["error_message"]
    saved = ok(
        call(
            fake,
            "GroupContact",
            "save",
            {
                "records": [{"group_id": gid, "contact_id": people["ada"], "status": "Added"}],
                "match": ["group_id", "contact_id"],
            },
        )
    )
    assert saved["countMatched"] == 1
    ok(
        call(
            fake,
            "GroupContact",
            "create",
            {"values": {"group_id:name": "Newsletter", "contact_id": people["grace"]}},
        )
    )
    rows = ok(
        call(
            fake,
            "GroupContact",
            "get",
            {
                "select": ["group_id.name", "contact_id", "status"],
                "where": [
                    ["group_id.name", "=", "Newsletter"],
                    ["status", "IN", ["Added", "Pending"]],
                ],
                "orderBy": {"contact_id": "ASC"},
            },
        )
    )["values"]
    assert [(r["contact_id"], r["status"]) for r in rows] == [
        (people["ada"], "Added"),
        (people["grace"], "Added"),
    ]
    ok(
        call(
            fake,
            "GroupContact",
            "update",
            {"where": [["contact_id", "=", people["grace"]]], "values": {"status": "Removed"}},
        )
    )
    ok(call(fake, "GroupContact", "delete", {"where": [["contact_id", "=", people["ada"]]]}))
    history = ok(
        call(
            fake,
            "SubscriptionHistory",
            "get",
            {"select": ["contact_id", "status"], "orderBy": {"id": "ASC"}},
        )
    )
    assert [h["status"] for h in history["values"]] == [
        "Pending",
        "Added",
        "Added",
        "Removed",
        "Removed",
    ]
    assert fake.contact(people["ada"])["modified_date"] == "2025-03-01 10:00:00"  # type: ignore[index]
    groups = ok(call(fake, "Group", "get", {"select": ["name", "title"]}))["values"]
    assert groups == [{"id": gid, "name": "Newsletter", "title": "Newsletter"}]


def test_modified_date_rules(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    def modified(name: str) -> str:
        return fake.contact(people[name])["modified_date"]  # type: ignore[index]

    fake.advance(10)
    fake.update_contact(people["ada"], first_name="Ada")  # unchanged value: no bump (ON UPDATE)
    assert modified("ada") == "2025-03-01 10:00:00"
    ok(
        call(
            fake,
            "Email",
            "create",
            {"values": {"contact_id": people["ada"], "email": "a2@example.org"}},
        )
    )
    assert modified("ada") == "2025-03-01 10:00:10"  # email insert trigger
    fake.advance(10)
    tag = fake.add_tag("VIP")
    fake.tag(people["grace"], tag)
    assert modified("grace") == "2025-03-01 10:00:00"  # tags do not bump
    fake.merge(people["alan"], people["grace"])
    assert modified("grace") == "2025-03-01 10:00:00"  # as 6.17.2: a merge leaves it alone
    assert modified("alan") == "2025-03-01 10:00:20"  # trashing bumps the loser (6.7+)
    assert fake.contact(people["alan"])["is_deleted"]  # type: ignore[index]
    merged = ok(call(fake, "Contact", "getMergedTo", {"contactId": people["alan"]}))
    assert merged["values"] == [{"id": people["grace"]}]
    assert ok(call(fake, "Contact", "getMergedTo", {"contactId": people["ada"]}))["values"] == [[]]


def test_chain(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    body = ok(
        call(
            fake,
            "Contact",
            "get",
            {
                "select": ["id"],
                "where": [["id", "=", people["ada"]]],
                "chain": {
                    "emails": [
                        "Email",
                        "get",
                        {"select": ["email"], "where": [["contact_id", "=", "$id"]]},
                    ]
                },
            },
        )
    )
    assert body["values"][0]["emails"][0]["email"] == "ada@example.org"


def test_custom_fields() -> None:
    with FakeCiviCRM(
        api_key=KEY, custom_fields={"Membership.level": "String", "Membership.since": "Date"}
    ) as fake:
        cid = fake.add_contact(first_name="C", **{"Membership.level": "Gold"})
        rows = ok(
            call(
                fake,
                "Contact",
                "get",
                {"select": ["custom.*"], "where": [["Membership.level", "=", "gold"]]},
            )
        )
        assert rows["values"] == [{"id": cid, "Membership.level": "Gold", "Membership.since": None}]
        star = ok(call(fake, "Contact", "get", {"select": ["*"]}))["values"][0]
        assert "Membership.level" not in star


# ---- faults and instrumentation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("429", lambda r: r.status_code == 429 and r.headers["Retry-After"] == "2"),
        (
            "500",
            lambda r: r.status_code == 500 and r.headers["Content-Type"].startswith("text/html"),
        ),
        ("502", lambda r: r.status_code == 502),
        ("503", lambda r: r.status_code == 503),
        ("504", lambda r: r.status_code == 504),
        ("html", lambda r: r.status_code == 200 and r.text.startswith("<html>")),
        ("truncated_json", lambda r: r.status_code == 200 and not r.text.endswith("}")),
        ("slow", lambda r: r.status_code == 200 and r.json()["count"] == 4),
    ],
    ids=["429", "500", "502", "503", "504", "html", "truncated-json", "slow"],
)
def test_fault_kinds(fake: FakeCiviCRM, people: dict[str, int], kind: str, check: Any) -> None:
    fake.faults = Faults(rules=[FaultRule(kind, nth=1)], retry_after=2, slow_delay=0.01)
    assert check(call(fake, "Contact", "get", {"select": ["id"]}))
    assert (
        ok(call(fake, "Contact", "get", {"select": ["id"]}))["count"] == 4
    )  # only the 1st request
    assert [r["fault"] for r in fake.requests] == [kind, None]


def test_timeout_fault(fake: FakeCiviCRM) -> None:
    fake.faults = Faults(rules=[FaultRule("timeout", nth=1)], timeout_delay=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(fake, "Contact", "get", {}, timeout=0.1)
    assert call(fake, "Contact", "get", {}).status_code == 200


def test_truncated_fault_executes_the_write(fake: FakeCiviCRM) -> None:
    fake.faults = Faults(rules=[FaultRule("truncated", entity="Contact", action="create")])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fake, "Contact", "create", {"values": {"first_name": "Half"}})
    fake.faults = None
    assert (
        ok(call(fake, "Contact", "get", {"select": ["first_name"]}))["values"][0]["first_name"]
        == "Half"
    )


def test_rules_by_entity_action_and_times(fake: FakeCiviCRM) -> None:
    fake.faults = Faults(rules=[FaultRule("503", entity="Contact", action="save", times=2)])
    statuses = [
        call(fake, "Contact", "save", {"records": [{"first_name": "x"}]}).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    assert call(fake, "Contact", "get", {}).status_code == 200
    assert len(fake.store.tables["Contact"]) == 1  # faulted 5xx calls were not executed


def test_random_faults_are_seeded_and_can_be_switched_off(fake: FakeCiviCRM) -> None:
    def run(seed: int) -> list[str | None]:
        fake.faults = Faults(rate=0.3, seed=seed, kinds=("429", "500", "502"))
        fake.clear_requests()
        for _ in range(40):
            call(fake, "Contact", "get", {})
        return [r["fault"] for r in fake.requests]

    first = run(3)
    assert first == run(3)
    assert 4 < sum(f is not None for f in first) < 25
    fake.faults = None
    assert all(call(fake, "Contact", "get", {}).status_code == 200 for _ in range(20))


def test_unknown_fault_kind_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        Faults(kinds=("boom",))


def test_request_log_counts_and_hides_secrets(fake: FakeCiviCRM) -> None:
    call(fake, "Contact", "get", {"limit": 1})
    call(fake, "Contact", "get", {}, headers={}, api_key=KEY, key=SITE, method="GET")
    call(fake, "Email", "get", {})
    assert fake.count_requests() == 3
    assert fake.count_requests("Contact") == 2
    assert fake.count_requests("Email", "get") == 1
    assert fake.requests[0]["params"] == {"limit": 1}
    assert fake.requests[0]["status"] == 200
    assert KEY not in json.dumps(fake.requests, default=str)
    assert SITE not in json.dumps(fake.requests, default=str)


def test_seed_is_realistic(fake: FakeCiviCRM) -> None:
    """What a seeded fake holds (its speed is the benchmarks' business: a timing here failed
    CI on a loaded machine)."""
    ids = fake.seed_contacts(10_000, random.Random(1))
    assert len(ids) == 10000
    store = fake.store
    assert len(store.loc_index["email_primary"]) > 8000
    assert len(store.tables["GroupContact"]) > 5000
    types = {row["contact_type"] for row in store.tables["Contact"].values()}
    assert types == {"Individual", "Organization"}


def test_pytest_plugin_fixture(pytester: pytest.Pytester) -> None:
    """The fixture comes with the installed package (its pytest11 entry point)."""
    pytester.makepyfile(
        """
        import requests
        def test_it(fake_civicrm):
            r = requests.post(fake_civicrm.api_url("Contact", "get"),
                              headers={"X-Civi-Auth": "Bearer test-key-of-the-fake"},
                              data={"params": "{}"})
            assert r.json()["count"] == 0
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


# ---- Appendix A exchanges not covered above ------------------------------------------------------


@pytest.mark.parametrize(
    "deleted_access", [True, False], ids=["access-deleted", "no-access-deleted"]
)
def test_a3_incremental_includes_trash_only_with_permission(
    fake: FakeCiviCRM, people: dict[str, int], deleted_access: bool
) -> None:
    perms = {"access CiviCRM", "view all contacts", "authenticate with api key"}
    fake.add_api_key(
        "inc", permissions=perms | ({"access deleted contacts"} if deleted_access else set())
    )
    fake.advance(30)
    fake.trash(people["grace"])
    params = {
        "select": ["id", "display_name", "is_deleted", "modified_date"],
        "where": [["modified_date", ">=", "2025-03-01 10:00:30"], ["is_deleted", "IN", [0, 1]]],
        "orderBy": {"modified_date": "ASC", "id": "ASC"},
        "limit": 500,
    }
    body = ok(call(fake, "Contact", "get", params, headers={"X-Civi-Auth": "Bearer inc"}))
    expected = [
        {
            "id": people["grace"],
            "display_name": "Grace Hopper",
            "is_deleted": True,
            "modified_date": "2025-03-01 10:00:30",
        }
    ]
    assert body["values"] == (expected if deleted_access else [])


def test_e7_e8_permission_errors(fake: FakeCiviCRM, people: dict[str, int]) -> None:
    fake.add_api_key("nodebug", permissions={"access CiviCRM", "authenticate with api key"})
    resp = call(
        fake,
        "Contact",
        "create",
        {"values": {"first_name": "x"}},
        headers={"X-Civi-Auth": "Bearer nodebug"},
    )
    body = resp.json()
    assert resp.status_code == 403
    assert body["error_code"] == "1"
    assert "(Error ID: " in body["error_message"]
    assert body["status"] == 403
    fake.add_api_key(
        "acl",
        permissions={"access CiviCRM", "authenticate with api key", "view debug output"},
        acl_contact_ids={people["ada"]},
    )
    resp = call(
        fake,
        "Contact",
        "update",
        {"where": [["id", "=", people["ada"]]], "values": {"nick_name": "A"}},
        headers={"X-Civi-Auth": "Bearer acl"},
    )
    assert resp.status_code == 200
    resp = call(
        fake,
        "Contact",
        "save",
        {"records": [{"id": people["grace"], "nick_name": "G"}]},
        headers={"X-Civi-Auth": "Bearer acl"},
    )
    assert resp.status_code == 403
    assert resp.json()["error_message"] == "ACL check failed"


@pytest.mark.parametrize(
    ("second", "status"), [("get", 200), ("delete", 403)], ids=["mixed", "all-fail"]
)
def test_e17_multi_call_status(
    fake: FakeCiviCRM, people: dict[str, int], second: str, status: int
) -> None:
    fake.add_api_key(
        "ro", permissions={"access CiviCRM", "authenticate with api key", "view all contacts"}
    )
    first = (
        ["Contact", "get", {"select": ["id"]}]
        if second == "get"
        else ["Contact", "create", {"values": {}}]
    )
    calls = [first, ["Contact", "delete", {"where": [["id", "=", people["ada"]]]}]]
    resp = requests.post(
        fake.api_url(),
        data={"calls": json.dumps(calls)},
        headers={"X-Civi-Auth": "Bearer ro"},
        timeout=5,
    )
    assert resp.status_code == status
    assert resp.json()[1]["status"] == 403


# ---- as a real CiviCRM 6.17.2 did (issue 12) ------------------------------------------------


def test_a_label_in_a_where_is_one_id(fake: FakeCiviCRM) -> None:
    """CiviCRM 6.17.2 turned `state_province_id:label = Limburg` into the Dutch id only."""
    dutch = fake.add_contact(
        contact_type="Individual", **{"address_primary.state_province_id": 5025}
    )
    belgian = fake.add_contact(
        contact_type="Individual", **{"address_primary.state_province_id": 1442}
    )
    label = "address_primary.state_province_id:label"
    everyone = ok(call(fake, "Contact", "get", {"select": [label], "orderBy": {"id": "ASC"}}))
    assert [r[label] for r in everyone["values"]] == ["Limburg", "Limburg"]
    found = ok(call(fake, "Contact", "get", {"where": [[label, "=", "Limburg"]]}))
    assert [r["id"] for r in found["values"]] == [dutch]
    found = ok(call(fake, "Contact", "get", {"where": [[label, "IN", ["Limburg"]]]}))
    assert [r["id"] for r in found["values"]] == [dutch]
    ids = [["address_primary.state_province_id", "IN", [1442, 5025]]]
    found = ok(call(fake, "Contact", "get", {"where": ids, "orderBy": {"id": "ASC"}}))
    assert [r["id"] for r in found["values"]] == [dutch, belgian]


def test_get_fields_loads_options(fake: FakeCiviCRM) -> None:
    params = {
        "select": ["name", "options"],
        "where": [["name", "IN", ["state_province_id"]]],
        "loadOptions": ["id", "label"],
    }
    [field] = ok(call(fake, "Address", "getFields", params))["values"]
    limburgs = [o["id"] for o in field["options"] if o["label"] == "Limburg"]
    assert limburgs == [1442, 5025]


def test_check_access_answers_for_the_caller(fake: FakeCiviCRM) -> None:
    """As 6.17.2: Contact.checkAccess says what THIS user may do (Permission.get cannot)."""
    cid = fake.add_contact(contact_type="Individual", first_name="Ana")
    fake.add_api_key("reader", permissions={"access CiviCRM", "view all contacts",
                                            "authenticate with api key"})  # fmt: skip
    reader = {"X-Civi-Auth": "Bearer reader"}
    for key, expected in ((None, True), (reader, False)):
        for action, values in (("create", {"contact_type": "Individual"}), ("delete", {"id": cid})):
            params = {"action": action, "values": values}
            [answer] = ok(call(fake, "Contact", "checkAccess", params, headers=key))["values"]
            assert answer["access"] is expected, (key, action)


def test_a_hidden_custom_field_in_a_where_is_an_error() -> None:
    """As 6.17.2: without 'access all custom data' the field is dropped from select, and a
    where on it fails (HTTP 500)."""
    with FakeCiviCRM(api_key=KEY, custom_fields={"GDPR.share": "Boolean"}) as server:
        from connector_civicrm.testing import ALL_PERMISSIONS

        server.add_api_key("weak", permissions=ALL_PERMISSIONS - {"access all custom data"})
        weak = {"X-Civi-Auth": "Bearer weak"}
        selected = call(server, "Contact", "get", {"select": ["GDPR.share"]}, headers=weak)
        assert ok(selected)["values"] == []
        where = {"where": [["GDPR.share", "=", True]]}
        assert call(server, "Contact", "get", where, headers=weak).status_code == 500
        assert call(server, "Contact", "get", where).status_code == 200
