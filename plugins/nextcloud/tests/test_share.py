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


def test_check_shares_the_book_read_only_with_the_group(fake: ShareFake) -> None:
    adapter(fake).check()
    [post] = fake.requests_to("POST")
    assert post.path == fake.book_path
    assert post.headers["Content-Type"].startswith("application/xml")
    assert _parse_share(post.body) == ([("organizers", False)], [])  # read-only: no read-write
    assert fake.shares == {"organizers": False}


def test_the_group_id_is_escaped_in_the_body(fake: ShareFake) -> None:
    fake.groups.add("a&b")
    adapter(fake, group="a&b").check()
    assert _parse_share(fake.requests_to("POST")[0].body) == ([("a&b", False)], [])
    assert fake.shares == {"a&b": False}


def test_sharing_is_sent_once_per_adapter_and_repeating_it_is_harmless(fake: ShareFake) -> None:
    first = adapter(fake)
    first.check()
    first.check()
    assert len(fake.requests_to("POST")) == 1  # the adapter remembers the book is ready
    adapter(fake).check()  # a new run shares again: the server keeps one share per group
    assert len(fake.requests_to("POST")) == 2
    assert fake.shares == {"organizers": False}


def test_wrong_credentials_are_an_authentication_failure(fake: ShareFake) -> None:
    with pytest.raises(AuthenticationFailed):
        adapter(fake, password="wrong").check()
    assert fake.shares == {}


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refused_share_stops_with_an_error(fake: ShareFake, status: int) -> None:
    if status == 404:
        sharing = adapter(fake, group="nobody")  # an unknown group: the fake answers 404
    else:
        sharing = adapter(fake)
        fake.fail_next_post.append(status)  # the book answers; only the POST is refused
    with pytest.raises(AdapterError) as caught:
        sharing.check()
    assert [r.method for r in fake.requests] == ["PROPFIND", "POST"]  # never retried
    assert fake.shares == {}
    if status == 401:
        assert isinstance(caught.value, AuthenticationFailed)
    else:
        assert not isinstance(caught.value, AuthenticationFailed)
        assert f"answered HTTP {status}" in str(caught.value)
        assert "group must exist" in (caught.value.hint or "")
