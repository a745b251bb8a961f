"""The conformance suite's fixtures and helpers, shared by its tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from connector_core.adapters import Adapter, Capability, Change, WriteResult
from connector_core.records import FIELDS, FieldType, Record
from connector_core.testing.checks import read_records
from connector_core.testing.samples import sample_records

_MAX_RECORDS = 1001


class KitBase:
    """Fixtures, settings and helpers of :class:`AdapterConformance`."""

    records_to_write: ClassVar[int | None] = None
    writable_fields: ClassVar[frozenset[str] | None] = None

    @pytest.fixture
    def adapter(self) -> Adapter:
        """Return a ready adapter: empty if it can write, else holding at least 3 records."""
        raise NotImplementedError("Override the `adapter` fixture to return a ready adapter")

    @pytest.fixture(autouse=True)
    def _close_adapter(self, adapter: Adapter) -> Iterator[None]:
        yield
        adapter.close()

    # -- helpers an author may override -------------------------------------------------

    def record_key(self, record: Record) -> str:
        """The write key a record read back was stored under; default: its ``id``."""
        return str(record.get("id"))

    # -- helpers -------------------------------------------------------------------------

    def _count(self, adapter: Adapter) -> int:
        return self.records_to_write or min(2 * adapter.page_size + 1, _MAX_RECORDS)

    def _fields(self, adapter: Adapter) -> frozenset[str]:
        if self.writable_fields is not None:
            return self.writable_fields
        fields = adapter.schema() & set(sample_records(1)[0]) - {"id"}
        assert fields, (
            f"{adapter.name}.schema() names none of the sample records' fields "
            f"({sorted(sample_records(1)[0])}); return the canonical fields this adapter "
            "writes from schema(), or set `writable_fields` on the test class"
        )
        return fields

    def _samples(self, adapter: Adapter, n: int) -> list[Record]:
        fields = self._fields(adapter) | {"id"}
        return [{k: v for k, v in r.items() if k in fields} for r in sample_records(n)]

    def _apply(self, adapter: Adapter, changes: list[Change]) -> list[WriteResult]:
        try:
            return list(adapter.write(changes))
        except NotImplementedError as exc:
            pytest.fail(
                f"write() raised {exc!r} although the adapter declares Capability.WRITE; "
                "implement write(), or drop WRITE so the base class refuses writes properly"
            )

    def _write(self, adapter: Adapter, changes: list[Change]) -> list[WriteResult]:
        results = self._apply(adapter, changes)
        failed = [f"{r.key}: {r.error}" for r in results if not r.ok]
        assert not failed, "write() reported failures:\n" + "\n".join(failed[:10])
        return results

    def _populate(self, adapter: Adapter, n: int) -> list[Record]:
        """Write `n` samples into a writable adapter; return them ([] for a read-only one)."""
        if Capability.WRITE not in adapter.capabilities:
            self._existing(adapter)
            return []
        try:
            existing = read_records(adapter)
        except Exception as exc:
            pytest.fail(
                f"reading the new, empty adapter from the `adapter` fixture raised {exc!r}; "
                "a writable adapter that holds nothing yet must read as one empty page"
            )
        assert not existing, (
            f"the `adapter` fixture of a writable adapter must return an empty one; "
            f"it already holds {len(existing)} records"
        )
        samples = self._samples(adapter, n)
        self._write(adapter, [Change.upsert(r["id"], r) for r in samples])
        return samples

    def _existing(self, adapter: Adapter) -> list[Record]:
        records = read_records(adapter)
        assert len(records) >= 3, (
            "the `adapter` fixture of a read-only adapter must return one holding at least "
            f"3 records; read() returned {len(records)}"
        )
        return records

    def _changed(self, adapter: Adapter, record: Record) -> tuple[str, Record]:
        """A copy of `record` with one writable string field changed, and that field."""
        strings = sorted(
            f for f in self._fields(adapter) if f in FIELDS and FIELDS[f].type is FieldType.STRING
        )
        if not strings:
            pytest.skip("no writable string field to change")
        field = "email" if "email" in strings else strings[0]
        return field, {**record, field: f"changed.{record['id']}@example.net"}

    def _read_back(self, adapter: Adapter) -> dict[str, Record]:
        return {self.record_key(r): r for r in read_records(adapter)}

    def _require(self, adapter: Adapter, *caps: Capability) -> None:
        missing = [c.value for c in caps if c not in adapter.capabilities]
        if missing:
            pytest.skip(f"the adapter does not declare {', '.join(missing)}")
