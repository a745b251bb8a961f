"""Connection settings: validation, URL styles, secrets kept out of reprs."""

from __future__ import annotations

from typing import Any

import pytest
from connector_civicrm import CivicrmSettings
from connector_civicrm.client import endpoint
from pydantic import ValidationError

BASE: dict[str, Any] = {"url": "https://crm.example.org/", "api_key": {"secret": "api_key"}}


def settings(**extra: Any) -> CivicrmSettings:
    return CivicrmSettings.model_validate({**BASE, **extra})


@pytest.mark.parametrize(
    ("style", "url"),
    [
        ("standalone", "https://crm.example.org/civicrm/ajax/api4/Contact/get"),
        ("drupal", "https://crm.example.org/civicrm/ajax/api4/Contact/get"),
        ("drupal7", "https://crm.example.org/?q=civicrm/ajax/api4/Contact/get"),
        ("wordpress", "https://crm.example.org/?civiwp=CiviCRM&q=civicrm/ajax/api4/Contact/get"),
        ("wordpress-clean", "https://crm.example.org/civicrm/ajax/api4/Contact/get/"),
        (
            "joomla",
            "https://crm.example.org/administrator/index.php?option=com_civicrm"
            "&task=civicrm/ajax/api4/Contact/get",
        ),
    ],
)
def test_url_styles(style: str, url: str) -> None:
    assert endpoint(settings(url_style=style), "civicrm/ajax/api4/Contact/get") == url


def test_wordpress_clean_uses_the_base_page_slug() -> None:
    s = settings(url_style="wordpress-clean", wordpress_base_page="crm")
    assert endpoint(s, "civicrm/ajax/api4") == "https://crm.example.org/crm/ajax/api4/"


def test_unknown_keys_and_literal_secrets_are_refused() -> None:
    with pytest.raises(ValidationError, match="surely"):
        settings(surely=1)
    with pytest.raises(ValidationError, match=r"never live in connector\.yaml"):
        CivicrmSettings.model_validate({**BASE, "api_key": "abc123"})


def test_consent_rules_are_checked() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        settings(consent={"contact_me": {}})
    with pytest.raises(ValidationError, match="neither a contact flag"):
        settings(consent={"contact_me": {"field": "likes_cake"}})
    with pytest.raises(ValidationError, match="lowercase"):
        settings(consent={"Contact-Me": {"field": "is_opt_out"}})
    rules = settings(
        consent={"a": {"field": "is_opt_out"}, "b": {"field": "G.f"}, "c": {"group": "News"}}
    ).consent
    assert rules["a"].granted_value is False
    assert rules["b"].granted_value is True
    assert rules["c"].granted_statuses == ("Added",)


def test_tls_settings() -> None:
    assert settings().verify is True
    assert settings(verify_tls=False).verify is False
    assert settings(ca_bundle="/etc/ca.pem").verify == "/etc/ca.pem"
