"""The OCS shares client against the fake OCS server written from the reference."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from connector_nextcloud.ocs import OcsClient, OcsError
from connector_nextcloud.testing.ocs_fake import OcsFake

from connector_core.errors import AdapterUnavailable, AuthenticationFailed
from connector_core.http import make_retry, make_session

USER, PASSWORD = "alice", "app-password-1234"
FOLDER = "/Shared/Organizers North"


@pytest.fixture
def fake() -> Iterator[OcsFake]:
    with OcsFake({USER: PASSWORD}, groups={"north", "south"}, paths={USER: [FOLDER]}) as server:
        yield server


def client(fake: OcsFake, *, password: str = PASSWORD, version: int = 2) -> OcsClient:
    session = make_session("nextcloud_files", retry=make_retry(total=2, backoff=0.01))
    session.auth = (USER, password)
    return OcsClient(fake.url, session, what="test", version=version)


# -- the fake behaves as the reference says -------------------------------------------------------


def test_fake_requires_the_csrf_header(fake: OcsFake) -> None:
    url = fake.url + "/ocs/v2.php/apps/files_sharing/api/v1/shares"
    response = requests.get(url, auth=(USER, PASSWORD), params={"format": "json"}, timeout=5)
    assert response.status_code == 412
    assert response.json() == {"message": "CSRF check failed"}


def test_fake_v1_answers_200_with_the_code_in_the_body(fake: OcsFake) -> None:
    headers = {"OCS-APIRequest": "true", "Accept": "application/json"}
    base = fake.url + "/ocs/{}.php/apps/files_sharing/api/v1/shares"
    v1 = requests.get(
        base.format("v1"), params={"path": "/nope"}, headers=headers, auth=(USER, PASSWORD)
    )
    v2 = requests.get(
        base.format("v2"), params={"path": "/nope"}, headers=headers, auth=(USER, PASSWORD)
    )
    assert (v1.status_code, v1.json()["ocs"]["meta"]["statuscode"]) == (200, 404)
    assert (v2.status_code, v2.json()["ocs"]["meta"]["statuscode"]) == (404, 404)
    ok = requests.get(base.format("v1"), headers=headers, auth=(USER, PASSWORD))
    assert ok.json()["ocs"]["meta"]["statuscode"] == 100


def test_fake_speaks_xml_unless_json_is_asked_for(fake: OcsFake) -> None:
    url = fake.url + "/ocs/v2.php/apps/files_sharing/api/v1/shares"
    headers = {"OCS-APIRequest": "true"}
    xml = requests.get(url, headers=headers, auth=(USER, PASSWORD), timeout=5)
    assert xml.text.startswith("<?xml")
    by_query = requests.get(url, headers=headers, params={"format": "json"}, auth=(USER, PASSWORD))
    assert json.loads(by_query.content)["ocs"]["meta"]["statuscode"] == 200


def test_fake_refuses_wrong_credentials_with_basic_realm(fake: OcsFake) -> None:
    url = fake.url + "/ocs/v2.php/apps/files_sharing/api/v1/shares"
    response = requests.get(url, headers={"OCS-APIRequest": "true"}, auth=(USER, "x"), timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Nextcloud"'


# -- the client -----------------------------------------------------------------------------------


def test_create_a_read_only_group_share(fake: OcsFake) -> None:
    share = client(fake).ensure_group_share(FOLDER, "north")
    assert share.created
    assert (share.share_type, share.share_with, share.permissions) == (1, "north", 1)
    [post] = fake.requests_to("POST")
    assert post.headers["ocs-apirequest"] == "true"
    assert "application/json" in post.headers["accept"]
    assert post.form == {
        "path": FOLDER,
        "shareType": "1",
        "shareWith": "north",
        "permissions": "1",
    }
    [listing] = fake.requests_to("GET")
    assert listing.query["path"] == FOLDER
    assert listing.query["reshares"] == "true"


def test_recreating_is_idempotent(fake: OcsFake) -> None:
    ocs = client(fake)
    first = ocs.ensure_group_share(FOLDER, "north")
    again = ocs.ensure_group_share(FOLDER, "north")
    assert not again.created
    assert again.id == first.id
    assert len(fake.requests_to("POST")) == 1
    assert len(fake.shares) == 1
    other = ocs.ensure_group_share(FOLDER, "south")  # another group is another share
    assert other.created
    assert len(fake.shares) == 2


def test_wider_permissions_are_set_back_to_read(fake: OcsFake) -> None:
    ocs = client(fake)
    share = ocs.create_share(FOLDER, "north", permissions=31)
    fixed = ocs.ensure_group_share(FOLDER, "north")
    assert (fixed.id, fixed.permissions) == (share.id, 1)
    assert [r.path.rsplit("/", 1)[-1] for r in fake.requests_to("PUT")] == [share.id]


def test_a_duplicate_post_is_refused_by_the_server(fake: OcsFake) -> None:
    ocs = client(fake)
    ocs.create_share(FOLDER, "north", permissions=1)
    with pytest.raises(OcsError) as caught:
        ocs.create_share(FOLDER, "north", permissions=1)
    assert caught.value.statuscode == 403


def test_unknown_group_is_a_clear_error(fake: OcsFake) -> None:
    with pytest.raises(OcsError) as caught:
        client(fake).ensure_group_share(FOLDER, "West Side")
    assert caught.value.statuscode == 404
    assert "valid group" in str(caught.value)
    assert "group exists" in (caught.value.hint or "")
    assert fake.shares == []


def test_unknown_path_is_a_clear_error(fake: OcsFake) -> None:
    with pytest.raises(OcsError) as caught:
        client(fake).ensure_group_share("/remote.php/dav/addressbooks/users/alice/x", "north")
    assert caught.value.statuscode == 404
    assert "Wrong path" in str(caught.value)


@pytest.mark.parametrize("version", [1, 2])
def test_errors_are_read_from_the_envelope_on_both_versions(fake: OcsFake, version: int) -> None:
    with pytest.raises(OcsError) as caught:
        client(fake, version=version).ensure_group_share(FOLDER, "nobody")
    assert caught.value.statuscode == 404
    share = client(fake, version=version).ensure_group_share(FOLDER, "north")
    assert share.share_with == "north"


def test_wrong_password_is_not_retried(fake: OcsFake) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        client(fake, password="wrong").ensure_group_share(FOLDER, "north")
    assert "app password" in (caught.value.hint or "")
    assert len(fake.requests) == 1


def test_busy_server_is_retried_then_reported_as_unavailable(fake: OcsFake) -> None:
    fake.fail_next = [503]
    share = client(fake).ensure_group_share(FOLDER, "north")  # one retry gets through
    assert share.created
    fake.fail_next = [503, 503, 503, 503]
    with pytest.raises(AdapterUnavailable):
        client(fake).shares(FOLDER)


def test_a_lost_csrf_header_is_explained(fake: OcsFake) -> None:
    ocs = client(fake)

    class Stripping(requests.Session):
        def request(self, method, url, *args, headers=None, **kwargs):  # type: ignore[no-untyped-def,override]
            headers = {k: v for k, v in (headers or {}).items() if k != "OCS-APIRequest"}
            return super().request(method, url, *args, headers=headers, **kwargs)

    stripping = Stripping()
    stripping.auth = (USER, PASSWORD)
    ocs.session = stripping
    with pytest.raises(OcsError) as caught:
        ocs.shares(FOLDER)
    assert caught.value.statuscode == 412
    assert "OCS-APIRequest" in (caught.value.hint or "")
