"""The bundled CSV adapter passes the conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from connector_csv import CsvAdapter, CsvSettings

from connector_core.testing import AdapterConformance, CanarySecrets


class TestCsvAdapter(AdapterConformance):
    @pytest.fixture
    def adapter(self, tmp_path: Path, connector_secrets: CanarySecrets) -> CsvAdapter:
        # A missing source file is an error (a typo must never read as "everyone left"),
        # so the empty target the kit starts from is an empty file.
        path = tmp_path / "people.csv"
        path.touch()
        return CsvAdapter(CsvSettings(path=path, page_size=10), connector_secrets)
