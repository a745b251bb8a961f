"""The bundled CiviCRM adapter passes the conformance suite, against the fake CiviCRM."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from connector_civicrm import CivicrmAdapter, CivicrmSettings
from connector_civicrm.mapping import EXTERNAL_ID
from connector_civicrm.testing import FakeCiviCRM

from connector_core.records import Record
from connector_core.testing import AdapterConformance, CanarySecrets
from connector_core.testing.samples import CANARY_SECRET


@pytest.fixture
def fake() -> Iterator[FakeCiviCRM]:
    with FakeCiviCRM(api_key=CANARY_SECRET, site_key=None, url_style="standalone") as server:
        yield server


class TestCivicrmAdapter(AdapterConformance):
    # CiviCRM computes `organization` from the employer (read only), and its do_not_* flags
    # are never empty (a written None reads back False). `country` round-trips on a real
    # CiviCRM, but the fake knows only eight countries, not the samples' BR, PL, VN ….
    writable_fields: ClassVar[frozenset[str] | None] = frozenset(
        {
            "first_name",
            "last_name",
            "email",
            "phone",
            "street_address",
            "city",
            "postal_code",
            "latitude",
            "longitude",
            "birth_date",
            "groups",
            "tags",
            "consent",
            "do_not_phone",
        }
    )

    @pytest.fixture
    def adapter(self, fake: FakeCiviCRM, connector_secrets: CanarySecrets) -> CivicrmAdapter:
        settings = CivicrmSettings.model_validate(
            {
                "url": fake.base_url,
                "api_key": {"secret": "api_key"},
                "page_size": 10,
                "consent": {"contact_me": {"group": "Contact me"}},
            }
        )
        return CivicrmAdapter(settings, connector_secrets, connection="kit")

    def record_key(self, record: Record) -> str:
        """Records are written under their key, stored as external_identifier."""
        return str(record.get(EXTERNAL_ID))
