"""pytest plugin giving ``fake_civicrm``.

Installed as a pytest plugin (entry point ``pytest11``) with the package.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake import FakeCiviCRM

API_KEY = "test-key-of-the-fake"
SITE_KEY = "site-key-of-the-fake"


@pytest.fixture
def fake_civicrm() -> Iterator[FakeCiviCRM]:
    """A fresh, empty fake CiviCRM (standalone URLs, key ``test-key-of-the-fake``, site key
    ``site-key-of-the-fake``)."""
    with FakeCiviCRM(api_key=API_KEY, site_key=SITE_KEY, url_style="standalone") as fake:
        yield fake
