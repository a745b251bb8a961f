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

    monkeypatch.setattr(client_module, "make_retry", lambda: make_retry(total=2, backoff=0))
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
    adapter = make_adapter(auth="jwt", site_key=None)
    adapter.secrets = _Secrets(fake_civicrm.mint_jwt())
    adapter.check()


class _Secrets:
    def __init__(self, value: str) -> None:
        self.value = value

    def resolve(self, ref: object) -> object:
        from pydantic import SecretStr

        return SecretStr(self.value)
