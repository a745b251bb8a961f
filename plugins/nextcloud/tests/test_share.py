"""Sharing the address book with a group (oc:share POST) against the fake from the reference."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.testing.share_fake import OC, ShareFake, _parse_share

from connector_core.config import SecretRef
from connector_core.credentials import StaticSecrets
from connector_core.errors import AdapterError, AuthenticationFailed

USER, PASSWORD = "alice", "app-password-1234"


@pytest.fixture
def fake() -> Iterator[ShareFake]:
    with ShareFake(USER, PASSWORD, groups={"organizers", "board"}) as server:
        yield server


def adapter(
    fake: ShareFake, *, group: str = "organizers", password: str = PASSWORD
) -> NextcloudAdapter:
    settings = NextcloudSettings(
        address_book_url=fake.book_url,
        user=USER,
        app_password=SecretRef(secret="app_password"),
        share_with_group=group,
    )
    return NextcloudAdapter(settings, StaticSecrets({"app_password": password}))


# -- the fake behaves as the reference says ------------------------------------------------------


def test_fake_answers_a_read_write_share_and_a_removal(fake: ShareFake) -> None:
    body = (
        f'<o:share xmlns:d="DAV:" xmlns:o="{OC}"><o:set>'
        "<d:href>principal:principals/groups/board</d:href><o:read-write/></o:set></o:share>"
    )
    response = requests.post(fake.book_url, data=body, auth=(USER, PASSWORD), timeout=5)
    assert response.status_code == 200
    assert response.headers["X-Sabre-Status"] == "everything-went-well"
    assert fake.shares == {"board": True}
    remove = body.replace("o:set>", "o:remove>").replace("<o:read-write/>", "")
    assert requests.post(fake.book_url, data=remove, auth=(USER, PASSWORD), timeout=5).ok
    assert fake.shares == {}


def test_fake_refuses_wrong_credentials_and_bad_bodies(fake: ShareFake) -> None:
    wrong = requests.post(fake.book_url, data=b"", auth=(USER, "nope"), timeout=5)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == 'Basic realm="Nextcloud"'
    bad = requests.post(fake.book_url, data=b"<share/>", auth=(USER, PASSWORD), timeout=5)
    assert bad.status_code == 400
    with pytest.raises(ValueError, match="d:href"):
        _parse_share(f'<o:share xmlns:o="{OC}"><o:set/></o:share>'.encode())


# -- the adapter's share code ---------------------------------------------------------------------


def share(adapter: NextcloudAdapter) -> None:
    """What a run does before its first card: create and share the book."""
    list(adapter.write([]))


def test_a_run_shares_the_book_read_only_with_the_group(fake: ShareFake) -> None:
    share(adapter(fake))
    [post] = fake.requests_to("POST")
    assert post.path == fake.book_path
    assert post.headers["Content-Type"].startswith("application/xml")
    assert _parse_share(post.body) == ([("organizers", False)], [])  # read-only: no read-write
    assert fake.shares == {"organizers": False}


def test_check_only_reports_the_share(fake: ShareFake) -> None:
    assert adapter(fake).check() == "a run will share the book read-only with group 'organizers'"
    assert fake.requests_to("POST") == []
    assert fake.shares == {}
    share(adapter(fake))
    assert adapter(fake).check() == "shared with group 'organizers'"


def test_check_names_a_group_that_does_not_exist(fake: ShareFake) -> None:
    with pytest.raises(AdapterError, match="'nobody', which does not exist"):
        adapter(fake, group="nobody").check()
    assert fake.requests_to("POST") == []


def test_the_group_id_is_escaped_in_the_body(fake: ShareFake) -> None:
    fake.groups.add("a&b")
    share(adapter(fake, group="a&b"))
    assert _parse_share(fake.requests_to("POST")[0].body) == ([("a&b", False)], [])
    assert fake.shares == {"a&b": False}


def test_sharing_is_sent_once_and_only_when_missing(fake: ShareFake) -> None:
    first = adapter(fake)
    share(first)
    share(first)
    assert len(fake.requests_to("POST")) == 1  # the adapter remembers the book is ready
    share(adapter(fake))  # a new run finds the share in oc:invite and sends none
    assert len(fake.requests_to("POST")) == 1
    fake.shares.clear()  # someone removed it: the next run shares again
    share(adapter(fake))
    assert len(fake.requests_to("POST")) == 2
    assert fake.shares == {"organizers": False}


def test_wrong_credentials_are_an_authentication_failure(fake: ShareFake) -> None:
    with pytest.raises(AuthenticationFailed):
        share(adapter(fake, password="wrong"))
    assert fake.shares == {}


def test_a_share_nextcloud_accepts_but_does_not_make_is_an_error(fake: ShareFake) -> None:
    """Nextcloud answers 200 to a share with a group that does not exist, and makes none."""
    with pytest.raises(AdapterError) as caught:
        share(adapter(fake, group="nobody"))
    assert "(HTTP 200) but the book is not shared with it" in str(caught.value)
    assert [r.method for r in fake.requests] == ["PROPFIND", "PROPFIND", "POST", "PROPFIND"]
    assert fake.shares == {}


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_share_stops_with_an_error(fake: ShareFake, status: int) -> None:
    sharing = adapter(fake)
    fake.fail_next_post.append(status)  # the book answers; only the POST is refused
    with pytest.raises(AdapterError) as caught:
        share(sharing)
    assert [r.method for r in fake.requests] == ["PROPFIND", "PROPFIND", "POST"]  # no retry
    assert fake.shares == {}
    if status == 401:
        assert isinstance(caught.value, AuthenticationFailed)
    else:
        assert not isinstance(caught.value, AuthenticationFailed)
        assert f"answered HTTP {status}" in str(caught.value)
        assert "group must exist" in (caught.value.hint or "")
