"""CiviCRM's failures become the engine's errors, with hints and without secrets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from connector_civicrm import CivicrmAdapter
from connector_civicrm.testing import FakeCiviCRM, FaultRule, Faults

from connector_core.errors import AdapterError, AdapterUnavailable, AuthenticationFailed

MakeAdapter = Callable[..., CivicrmAdapter]


def test_wrong_key_is_refused_once(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter()
    adapter.secrets = _Secrets("wrong-key-value")
    with pytest.raises(AuthenticationFailed, match="Invalid credential") as info:
        adapter.check()
    assert "32 characters" in (info.value.hint or "")
    assert "wrong-key-value" not in str(info.value) + (info.value.hint or "")
    assert fake_civicrm.count_requests() == 1  # 401 is never retried


def test_missing_permission_is_named(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    fake_civicrm.add_api_key("reader", permissions={"access CiviCRM", "view all contacts",
                                                    "authenticate with api key",
                                                    "view debug output"})  # fmt: skip
    adapter = make_adapter()
    adapter.secrets = _Secrets("reader")
    from connector_core.adapters import Change

    with pytest.raises(AuthenticationFailed, match=r"Contact::create|ACL check failed") as info:
        list(adapter.write([Change.upsert("k1", {"id": "k1", "first_name": "A"})]))
    assert "add contacts" in (info.value.hint or "")


def test_api_errors_show_civicrm_message(make_adapter: MakeAdapter) -> None:
    adapter = make_adapter()
    with pytest.raises(AdapterError, match="Invalid field 'nonexistent'"):
        adapter.client.call("Contact", "get", {"where": [["nonexistent", "=", 1]]})


@pytest.mark.parametrize("kind", ["429", "503", "502"])
def test_busy_answers_are_retried(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter, kind: str
) -> None:
    fake_civicrm.add_contact(contact_type="Individual", first_name="A")
    fake_civicrm.faults = Faults(retry_after=0, rules=[FaultRule(kind, times=2)])
    records = [r for p in make_adapter().read() for r in p.records]
    assert len(records) == 1


def test_persistent_unavailability_is_retriable(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connector_civicrm.client as client_module

    from connector_core.http import make_retry

    # the retries are built when the module loads: replace the one reads use
    quick = make_retry(total=2, backoff=0).new(connect=1, read=2)
    monkeypatch.setattr(client_module, "_READ_RETRY", quick)
    fake_civicrm.faults = Faults(retry_after=0, rules=[FaultRule("503")])
    with pytest.raises(AdapterUnavailable, match="HTTP 503"):
        make_adapter().check()


@pytest.mark.parametrize("kind", ["truncated_json", "html", "truncated"])
def test_garbled_reads_are_asked_again(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter, kind: str
) -> None:
    fake_civicrm.add_contact(contact_type="Individual", first_name="A")
    fake_civicrm.faults = Faults(rules=[FaultRule(kind, times=1)])
    assert len([r for p in make_adapter().read() for r in p.records]) == 1


def test_garbled_bodies_end_in_a_clear_error(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.faults = Faults(rules=[FaultRule("html")])
    with pytest.raises(AdapterUnavailable, match="not complete JSON"):
        make_adapter().check()


def test_wrong_url_style_hint(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    with pytest.raises(AdapterError) as info:
        make_adapter(url_style="joomla").check()
    assert "url_style" in (info.value.hint or "")


@pytest.mark.parametrize("style", ["drupal7", "wordpress", "wordpress-clean", "joomla"])
def test_url_styles_reach_the_fake(style: str, make_adapter: MakeAdapter) -> None:
    fake_style = {"wordpress-clean": "wordpress"}.get(style, style)
    with FakeCiviCRM(api_key="k", url_style=fake_style) as fake:
        fake.add_contact(contact_type="Individual", first_name="A")
        adapter = make_adapter(url=fake.base_url, url_style=style, site_key=None)
        adapter.secrets = _Secrets("k")
        assert len([r for p in adapter.read() for r in p.records]) == 1
        adapter.close()


def test_jwt_is_sent_like_a_key(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    fake_civicrm.add_contact(contact_type="Individual", first_name="A")  # a site has one
    adapter = make_adapter(auth="jwt", site_key=None)
    adapter.secrets = _Secrets(fake_civicrm.mint_jwt())
    assert adapter.check() == "1 contact(s) visible"


class _Secrets:
    def __init__(self, value: str) -> None:
        self.value = value

    def resolve(self, ref: object) -> object:
        from pydantic import SecretStr

        return SecretStr(self.value)


# ---- what a real CiviCRM 6.17.2 showed (issue 12) -------------------------------------------


def test_a_write_that_timed_out_is_looked_up_not_sent_again(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    """A real Contact.save answered after the client's timeout was POSTed 6 times; the
    server had done it the first time. The writer must look up what happened instead."""
    from connector_core.adapters import Change

    fake_civicrm.faults = Faults(
        slow_delay=1.0, rules=[FaultRule("slow", entity="Contact", action="save", times=1)]
    )
    adapter = make_adapter(timeout=0.3)
    results = list(adapter.write([Change.upsert("k1", {"id": "k1", "first_name": "A"})]))
    assert [r.action for r in results] == ["created"], results
    assert fake_civicrm.count_requests("Contact", "save") == 1
    assert len(fake_civicrm.store.tables["Contact"]) == 1


def test_a_write_that_timed_out_and_is_not_found_waits_for_the_next_run(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    """On a real CiviCRM a save of 150 contacts that timed out was not visible yet when looked
    up at once (the server was still at work): sending it again then would duplicate it."""
    from connector_core.adapters import Change

    fake_civicrm.faults = Faults(
        timeout_delay=1.0, rules=[FaultRule("timeout", entity="Contact", action="save", times=1)]
    )
    adapter = make_adapter(timeout=0.3)
    change = Change.upsert("k1", {"id": "k1", "first_name": "A"})
    [result] = adapter.write([change])
    assert result.action == "failed"
    assert "the next run looks it up again" in (result.error or "")
    assert fake_civicrm.count_requests("Contact", "save") == 1
    [again] = adapter.write([change])  # the next run
    assert again.action == "created", again
    assert fake_civicrm.count_requests("Contact", "save") == 2
    assert len(fake_civicrm.store.tables["Contact"]) == 1


def test_a_slow_server_is_not_reported_as_unreachable(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.answer_delay = 0.5
    adapter = make_adapter(timeout=0.2)
    with pytest.raises(AdapterUnavailable) as info:
        adapter.check()
    message = str(info.value)
    assert "cannot connect" not in message
    assert "did not answer within 0.2 s" in message
    assert fake_civicrm.base_url in message


def test_a_server_that_is_down_is_reported_quickly_naming_the_url(
    make_adapter: MakeAdapter,
) -> None:
    import socket
    import time

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    adapter = make_adapter(url=url)
    started = time.monotonic()
    with pytest.raises(AdapterUnavailable, match="cannot connect") as info:
        adapter.check()
    assert time.monotonic() - started < 5
    assert url in str(info.value)
