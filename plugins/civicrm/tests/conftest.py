"""Fixtures for the CiviCRM adapter's tests: a real HTTP fake CiviCRM on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from connector_civicrm import CivicrmAdapter, CivicrmSettings
from connector_civicrm.testing import FakeCiviCRM

from connector_core.credentials import StaticSecrets

MakeAdapter = Callable[..., CivicrmAdapter]


@pytest.fixture
def make_adapter(fake_civicrm: FakeCiviCRM) -> Iterator[MakeAdapter]:
    """Build adapters on the fake; keyword arguments are settings, plus `mapping`."""
    made: list[CivicrmAdapter] = []

    def make(*, mapping: dict[str, str | None] | None = None, **settings: Any) -> CivicrmAdapter:
        settings.setdefault("url", fake_civicrm.base_url)
        settings.setdefault("api_key", {"secret": "api_key"})
        settings.setdefault("site_key", {"secret": "site_key"})
        settings.setdefault("page_size", 10)
        secrets = StaticSecrets(
            {"api_key": fake_civicrm.api_key, "site_key": fake_civicrm.site_key}
        )
        adapter = CivicrmAdapter(
            CivicrmSettings.model_validate(settings), secrets, mapping=mapping, connection="crm"
        )
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()
