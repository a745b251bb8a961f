"""An in-memory reference adapter: a complete, small example of the adapter contract.

Records live in module-level stores keyed by ``MemorySettings.store``, so two adapters with
the same store see the same data (one as a job's source, one as another job's target).
Every upsert or delete bumps the store's change counter; the counter is the read cursor,
and an incremental read returns the records upserted after it. Deletes are not reported by
incremental reads: the engine's reconciliation pass finds them from a full read.

The adapter is not registered through an entry point; this module is a plugin, so register it
where a test needs it::

    from connector_core.testing import memory
    register_builtin(pm, memory, "memory")
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import ClassVar

from pydantic import Field

from connector_core.adapters import (
    Adapter,
    AdapterSettings,
    Capability,
    Change,
    Page,
    WriteResult,
)
from connector_core.errors import AdapterError
from connector_core.hookspecs import hookimpl
from connector_core.query import Condition, matches
from connector_core.records import FIELDS, Record


class MemorySettings(AdapterSettings):
    """Settings of the memory adapter: which shared store to use."""

    store: str = Field("default", min_length=1, description="Name of the in-memory store")


@dataclasses.dataclass
class _Store:
    """Records by key, and for each key the change number that last upserted it."""

    records: dict[str, Record] = dataclasses.field(default_factory=dict)
    changed: dict[str, int] = dataclasses.field(default_factory=dict)
    counter: int = 0

    def bump(self) -> int:
        self.counter += 1
        return self.counter


_STORES: dict[str, _Store] = {}


def reset_memory_stores(*stores: str) -> None:
    """Forget the named stores, or every store when no name is given."""
    if not stores:
        _STORES.clear()
    for name in stores:
        _STORES.pop(name, None)


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        return int(cursor)
    except ValueError:
        raise AdapterError(
            f"memory: {cursor!r} is not a cursor this adapter produced",
            hint="Reset the job's cursor so the next run reads everything.",
        ) from None


def _project(record: Record, fields: frozenset[str] | None) -> Record:
    if fields is None:
        return copy.deepcopy(record)
    return {k: copy.deepcopy(v) for k, v in record.items() if k in fields or k == "id"}


class MemoryAdapter(Adapter):
    """Records kept in this process's memory; for engine tests and as an example to copy."""

    name: ClassVar[str] = "memory"
    settings_model: ClassVar[type[AdapterSettings]] = MemorySettings
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.READ, Capability.WRITE, Capability.DELETE, Capability.INCREMENTAL}
    )
    description: ClassVar[str] = "Records kept in memory (tests and examples)"

    @property
    def store_name(self) -> str:
        """The name of the shared store this adapter reads and writes."""
        settings = self.settings
        assert isinstance(settings, MemorySettings)
        return settings.store

    @property
    def _store(self) -> _Store:
        return _STORES.setdefault(self.store_name, _Store())

    def schema(self) -> frozenset[str]:
        """Every canonical field: the memory adapter stores records as they are given."""
        return frozenset(FIELDS)

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        """Yield the records upserted after `cursor` (all when None), in change order."""
        since = _parse_cursor(cursor)  # a bad cursor fails at the call, not at the first page
        return self._pages(since, snapshot=cursor is None, fields=fields, where=where)

    def _pages(
        self,
        since: int,
        *,
        snapshot: bool,
        fields: frozenset[str] | None,
        where: Condition | None,
    ) -> Iterator[Page]:
        store = self._store
        end = store.counter
        keys = sorted((n, k) for k, n in store.changed.items() if since < n <= end)
        if not keys:
            yield Page([], cursor=str(end if snapshot else max(since, end)), snapshot=snapshot)
            return
        size = self.page_size
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            records = [store.records[k] for _, k in chunk if k in store.records]
            selected = [_project(r, fields) for r in records if matches(where, r)]
            last = start + size >= len(keys)
            yield Page(selected, cursor=str(end if last else chunk[-1][0]), snapshot=snapshot)

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Apply each change in order; a delete of a missing key is ``unchanged``."""
        for change in changes:
            yield self._apply(change)

    def _apply(self, change: Change) -> WriteResult:
        store = self._store
        if change.action == "delete":
            if store.records.pop(change.key, None) is None:
                return WriteResult(change.key, "unchanged")
            store.changed.pop(change.key, None)
            store.bump()
            return WriteResult(change.key, "deleted")
        if change.record is None:
            return WriteResult(change.key, "failed", error="an upsert needs a record")
        record = {**copy.deepcopy(change.record), "id": change.key}
        previous = store.records.get(change.key)
        if previous == record:
            return WriteResult(change.key, "unchanged", version=str(store.changed[change.key]))
        store.records[change.key] = record
        store.changed[change.key] = store.bump()
        version = str(store.counter)
        if previous is None:
            return WriteResult(change.key, "created", version=version)
        return WriteResult(change.key, "updated", version=version)

    def __repr__(self) -> str:
        return f"<MemoryAdapter connection={self.connection!r} store={self.store_name!r}>"


class EchoingMemoryAdapter(MemoryAdapter):
    """A memory target that refuses every upsert with an error quoting the record's values,
    the way some servers do (``Duplicate entry '...'``, ``'...' is not a valid option``):
    for tests that no such value reaches a message. Not registered as a plugin."""

    name: ClassVar[str] = "echoing"

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Refuse each upsert, quoting its values as str, repr and JSON; apply deletes."""
        for change in changes:
            if change.record is None:
                yield self._apply(change)
                continue
            values = [v for k, v in change.record.items() if k != "id"]
            error = (
                f"Duplicate entry '{values[0] if values else ''}' for key 'UI'; "
                f"values: {change.record!r}; json: {json.dumps(change.record)}; "
                + "; ".join(f"'{v}' is not a valid option" for v in values)
            )
            yield WriteResult(change.key, "failed", error=error)


@hookimpl
def register_adapters() -> list[type[Adapter]]:
    """Provide the memory adapter (when this module is registered as a plugin)."""
    return [MemoryAdapter]
