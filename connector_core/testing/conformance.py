"""The conformance suite every adapter runs, built-in or third-party.

Subclass :class:`AdapterConformance` as ``Test<Name>Adapter`` and override one fixture,
``adapter``. For a writable adapter return an empty one; for a read-only adapter return one
already holding at least 3 records. Request the ``connector_secrets`` fixture and pass it to
the adapter, so that the suite can check the secret never leaks::

    class TestCsvAdapter(AdapterConformance):
        @pytest.fixture
        def adapter(self, tmp_path, connector_secrets):
            settings = CsvSettings(path=tmp_path / "people.csv", page_size=10)
            return CsvAdapter(settings, connector_secrets)

Set a small ``page_size`` (10 is good): the suite writes ``2 * page_size + 1`` records to see
reads span several pages. Each failure says what the adapter did and what the contract wants.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import ValidationError

from connector_core.adapters import (
    PART_DIGEST,
    Adapter,
    AdapterSettings,
    Capability,
    Change,
    KnownRows,
    Page,
    SourceFields,
    WriteResult,
)
from connector_core.errors import AdapterError, ConnectorError
from connector_core.records import FIELDS, Record, is_known_field
from connector_core.testing.checks import (
    canonical,
    exception_texts,
    raised,
    read_pages,
    read_records,
    secret_like_fields,
    secret_refs,
    type_problem,
)
from connector_core.testing.kit import KitBase
from connector_core.testing.samples import CANARY_SECRET, sample_records

#: Iterator types that betray a read which built every page before returning.
_EAGER_ITERATORS = frozenset({"list_iterator", "tuple_iterator", "list_reverseiterator"})
_UPSERT_ACTIONS = frozenset({"created", "updated", "unchanged"})
_DELETE_ACTIONS = frozenset({"deleted", "unchanged"})
_VOLATILE = frozenset({"modified_at"})


def _stable(record: Record) -> Record:
    return {k: v for k, v in record.items() if k not in _VOLATILE}


class AdapterConformance(KitBase):
    """Subclass as ``Test<Name>Adapter`` and override the ``adapter`` fixture.

    Attributes:
        records_to_write: how many sample records the paging tests write; default
            ``2 * page_size + 1`` (at most 1001).
        writable_fields: the fields a write must round-trip; default: the adapter's
            ``schema()`` intersected with the sample records' fields.
    """

    # -- identity and settings --------------------------------------------------------------

    def test_name_is_a_lowercase_identifier(self, adapter: Adapter) -> None:
        """`name` is a lowercase identifier: it appears in YAML and on the command line."""
        name = adapter.name
        why = "(it is used in YAML and on the command line)"
        assert isinstance(name, str), f"`name` must be a string {why}, not {name!r}"
        assert name.isidentifier(), f"`name` must be a Python identifier {why}, not {name!r}"
        assert name.islower(), f"`name` must be lowercase {why}, not {name!r}"

    def test_capabilities_are_capability_members(self, adapter: Adapter) -> None:
        """`capabilities` is a frozenset of Capability with READ, and DELETE only with WRITE."""
        caps = adapter.capabilities
        assert isinstance(caps, frozenset), "`capabilities` must be a frozenset of Capability"
        odd = [c for c in caps if not isinstance(c, Capability)]
        assert not odd, f"`capabilities` holds values that are not Capability members: {odd!r}"
        assert Capability.READ in caps, "every adapter must declare Capability.READ"
        assert Capability.DELETE not in caps or Capability.WRITE in caps, (
            "Capability.DELETE needs Capability.WRITE: deletes go through write()"
        )
        assert Capability.PER_JOB_RECORDS not in caps or Capability.WRITE in caps, (
            "Capability.PER_JOB_RECORDS needs Capability.WRITE: it promises how writes behave"
        )

    def test_settings_model_rejects_unknown_keys(self, adapter: Adapter) -> None:
        """The settings model rejects unknown keys, naming them."""
        model = type(adapter).settings_model
        assert issubclass(model, AdapterSettings), "settings_model must subclass AdapterSettings"
        assert isinstance(adapter.settings, model), "adapter.settings must be a settings_model"
        data = {**adapter.settings.model_dump(), "surely_not_a_setting": 1}
        error = raised(lambda: model.model_validate(data))
        assert isinstance(error, ValidationError), (
            f"{model.__name__} accepted an unknown key; keep model_config extra='forbid' "
            "(inherited from AdapterSettings) so typos in connector.yaml are reported"
        )
        assert "surely_not_a_setting" in str(error), "the error must name the unknown key"

    def test_settings_model_has_json_schema(self, adapter: Adapter) -> None:
        """The settings model has a JSON Schema that forbids unknown keys."""
        schema = type(adapter).settings_model.model_json_schema()
        json.dumps(schema)
        assert "page_size" in schema.get("properties", {}), "the schema must list page_size"
        assert schema.get("additionalProperties") is False, (
            "the JSON Schema must forbid additional properties, so editors flag typos"
        )

    def test_secret_like_settings_use_secretref(self, adapter: Adapter) -> None:
        """Settings named like secrets are typed SecretRef, never plain strings."""
        bad = sorted(secret_like_fields(type(adapter).settings_model))
        assert not bad, (
            f"settings {bad} look like secrets; type them `SecretRef` (written "
            "`{secret: KEY}` in YAML and resolved through adapter.secrets), never str"
        )

    # -- reading -----------------------------------------------------------------------------

    def test_read_is_lazy(self, adapter: Adapter) -> None:
        """read() returns a lazy iterator of Page, each holding at most page_size records."""
        written = self._populate(adapter, self._count(adapter))
        result = adapter.read()
        assert isinstance(result, Iterator), (
            f"read() must return an iterator of Page (write it as a generator), "
            f"not {type(result).__name__}"
        )
        assert type(result).__name__ not in _EAGER_ITERATORS, (
            "read() returned an iterator over a ready-made list: yield each page as it is "
            "fetched, so a large source is never held in memory"
        )
        pages = list(result)
        odd = {type(p).__name__ for p in pages if not isinstance(p, Page)}
        assert not odd, f"read() must yield connector_core.adapters.Page objects, not {odd}"
        sizes = [len(p.records) for p in pages]
        assert max(sizes, default=0) <= adapter.page_size, (
            f"pages must hold at most page_size={adapter.page_size} records; sizes: {sizes}"
        )
        if written:
            assert sum(sizes) == len(written), f"wrote {len(written)}, read {sum(sizes)} records"
        if len(written) > adapter.page_size:
            assert len(pages) > 1, f"{sum(sizes)} records came back in a single page"

    def test_keys_are_unique_and_stable(self, adapter: Adapter) -> None:
        """Every record has a non-empty string id, unique in a read and stable across reads."""
        written = self._populate(adapter, self._count(adapter))
        first, second = read_records(adapter), read_records(adapter)
        bad = [r for r in first if not isinstance(r.get("id"), str) or not r["id"]]
        assert not bad, f"every record needs a non-empty string `id`; e.g. {bad[0]!r}"
        dupes = sorted(k for k, n in Counter(r["id"] for r in first).items() if n > 1)
        assert not dupes, f"ids must be unique within a read; repeated: {dupes[:10]}"
        assert {r["id"] for r in first} == {r.get("id") for r in second}, (
            "two reads of unchanged data returned different ids; ids must be stable"
        )
        if written:
            assert len(first) == len(written), (
                f"wrote {len(written)} records, read back {len(first)}"
            )

    def test_available_fields_describe_what_a_read_fills(self, adapter: Adapter) -> None:
        """available_fields() is None or a SourceFields naming canonical fields, id included."""
        self._populate(adapter, 3)
        found = adapter.available_fields()
        if found is None:
            return  # the adapter cannot tell: the engine does not check this connection
        assert isinstance(found, SourceFields), "available_fields() must return SourceFields"
        odd = sorted(f for f in found.provided if not is_known_field(f) and f != "consent")
        assert not odd, f"available_fields().provided holds non-canonical names {odd}"
        assert "id" in found.provided, "a source holding records provides their `id`"
        read = {k for r in read_records(adapter) for k in r if k != "consent"}
        unlisted = sorted(read - found.provided - {"deleted", "modified_at"})
        assert not unlisted or not found.verified, (
            f"read() filled {unlisted}, which available_fields().provided does not list; "
            "the schema check would refuse policies testing them"
        )
        bad = [m for m in found.missing if not all(isinstance(k, str) for k in m.setting)]
        assert not bad, "MissingField.setting must be a tuple of connector.yaml keys"

    def test_count_matches_a_full_read(self, adapter: Adapter) -> None:
        """count() is None (cannot tell cheaply) or the number of records a full read lists."""
        self._populate(adapter, 3)
        counted = adapter.count()
        if counted is not None:
            assert counted == len(read_records(adapter)), (
                f"count() said {counted}; a full read listed {len(read_records(adapter))}"
            )

    def test_records_use_canonical_fields(self, adapter: Adapter) -> None:
        """Records are keyed by canonical field names only."""
        self._populate(adapter, 3)
        unknown = sorted({k for r in read_records(adapter) for k in r if not is_known_field(k)})
        assert not unknown, (
            f"records hold non-canonical keys {unknown}; map tool fields to the names in "
            "connector_core.records.FIELDS, or to `extra.<adapter>.<name>`"
        )

    def test_values_have_canonical_types(self, adapter: Adapter) -> None:
        """Canonical fields hold values of their declared type (or None)."""
        self._populate(adapter, 3)
        problems = {
            problem
            for record in read_records(adapter)
            for key, value in record.items()
            if key in FIELDS and (problem := type_problem(FIELDS[key], value))
        }
        assert not problems, "values of the wrong type:\n" + "\n".join(sorted(problems)[:10])

    def test_read_with_fields_keeps_every_record(self, adapter: Adapter) -> None:
        """read(fields=...) narrows fields, keeps ids and drops no record."""
        self._populate(adapter, 3)
        full = {r.get("id") for r in read_records(adapter)}
        pages = read_pages(adapter, fields=frozenset({"email"}))
        narrow = [r.get("id") for p in pages for r in p.records]
        assert None not in narrow, "read(fields=...) must still include `id` in every record"
        assert set(narrow) == full, "read(fields=...) must select fields, not records"

    def test_row_fingerprints_skip_only_known_rows(self, adapter: Adapter) -> None:
        """With ``row_fingerprints``: a read given no known rows lists what a plain read
        lists, with fingerprints; given them all, it lists every id again, decoding none."""
        self._require(adapter, Capability.ROW_FINGERPRINTS)
        self._populate(adapter, self._count(adapter))
        read: Callable[..., Iterator[Page]] = adapter.read
        plain = sorted(str(r["id"]) for p in adapter.read() for r in p.records)
        first = list(read(known=KnownRows()))
        assert sorted(str(r["id"]) for p in first for r in p.records) == plain, (
            "read(known=KnownRows()) must list the records a plain read lists"
        )
        marks = {sid: m for p in first for sid, m in p.fingerprints.items()}
        for block in (b for p in first for b in p.blocks):  # rows given in blocks instead
            marks.update(zip(block.ids, block.fingerprints, strict=True))
            assert len(block.parts) % PART_DIGEST == 0, (
                f"Block.parts must be digests of PART_DIGEST ({PART_DIGEST}) bytes each"
            )
        assert set(marks) <= set(plain), "Page.fingerprints must be keyed by listed source ids"
        again = list(read(known=KnownRows(frozenset(marks.values()))))
        skipped = [sid for p in again for sid in p.skipped]
        assert sorted(skipped) == sorted(marks), (
            "a read given every fingerprint must list each such row in Page.skipped"
        )
        decoded = {str(r["id"]) for p in again for r in p.records}
        assert not decoded & set(skipped), "a skipped row must not be decoded as well"
        forced = list(read(known=KnownRows(frozenset(marks.values()), frozenset(marks))))
        assert not [sid for p in forced for sid in p.skipped], (
            "ids named in KnownRows.decode must be decoded whatever their fingerprint"
        )

    # -- writing ------------------------------------------------------------------------------

    def test_write_then_read_round_trip(self, adapter: Adapter) -> None:
        """Written records read back with every writable field intact."""
        self._require(adapter, Capability.WRITE)
        samples = self._populate(adapter, self._count(adapter))
        got, problems = self._read_back(adapter), []
        for sample in samples:
            back = got.get(sample["id"])
            if back is None:
                problems.append(f"{sample['id']}: written but not read back")
                continue
            problems.extend(
                f"{sample['id']}.{f}: wrote {sample.get(f)!r}, read back {back.get(f)!r}"
                for f in sorted(self._fields(adapter))
                if canonical(f, back.get(f)) != canonical(f, sample.get(f))
            )
        assert not problems, "records changed on the way through:\n" + "\n".join(problems[:15])

    def test_rewrite_is_idempotent(self, adapter: Adapter) -> None:
        """Writing the same records again changes nothing and adds nothing."""
        self._require(adapter, Capability.WRITE)
        samples = self._populate(adapter, 3)
        before = self._read_back(adapter)
        results = self._write(adapter, [Change.upsert(r["id"], r) for r in samples])
        actions = {r.action for r in results}
        assert actions <= {"unchanged", "updated"}, (
            f"writing the same records again must report unchanged (or updated), not {actions}"
        )
        after = self._read_back(adapter)
        assert len(after) == len(before), (
            f"a rewrite changed the count: {len(before)} → {len(after)}"
        )
        assert {k: _stable(v) for k, v in after.items()} == {
            k: _stable(v) for k, v in before.items()
        }, "a rewrite of identical records changed what read() returns"

    def test_update_changes_a_field(self, adapter: Adapter) -> None:
        """An upsert of a changed record reports 'updated' and stores the change."""
        self._require(adapter, Capability.WRITE)
        samples = self._populate(adapter, 3)
        field, changed = self._changed(adapter, samples[1])
        [result] = self._write(adapter, [Change.upsert(changed["id"], changed)])
        assert result.action == "updated", f"an update must report 'updated', not {result.action!r}"
        got = self._read_back(adapter)
        assert len(got) == len(samples), "an update must not add or remove records"
        stored = got.get(changed["id"], {}).get(field)
        assert stored == changed[field], f"the new {field} was not stored; read back {stored!r}"

    def test_delete(self, adapter: Adapter) -> None:
        """A delete removes exactly its record; deleting a missing key succeeds."""
        self._require(adapter, Capability.WRITE, Capability.DELETE)
        samples = self._populate(adapter, 3)
        gone = samples[0]["id"]
        [result] = self._write(adapter, [Change.delete(gone)])
        assert result.action == "deleted", f"a delete must report 'deleted', not {result.action!r}"
        assert set(self._read_back(adapter)) == {r["id"] for r in samples[1:]}, (
            f"after deleting {gone!r}, read() must return exactly the other records"
        )
        exc = raised(lambda: self._write(adapter, [Change.delete("kit-never-existed")]))
        assert exc is None, f"deleting a missing key must succeed quietly, but raised {exc!r}"

    def test_write_session_takes_a_run_in_batches(self, adapter: Adapter) -> None:
        """open_writes(): batches answered in order, one result per change; a deferred
        session shows nothing before commit() and everything after it; a second session
        committed by its class's commit_many(), as a group of jobs ends, as well."""
        self._require(adapter, Capability.WRITE)
        self._populate(adapter, 0)  # checks the fixture's target is empty
        samples = self._samples(adapter, 7)
        with adapter.open_writes() as session:
            results = []
            for start in range(0, len(samples), 3):
                batch = [Change.upsert(r["id"], r) for r in samples[start : start + 3]]
                answered = list(session.write(batch))
                assert [r.key for r in answered] == [c.key for c in batch], (
                    "a session's write() must yield one result per change, same keys, in order"
                )
                results.extend(answered)
            if session.deferred:
                assert not self._read_back(adapter), (
                    "a deferred session (deferred = True) must not show any change before "
                    "commit(): the engine records its batches only after the commit"
                )
            session.commit()
        assert [r.action for r in results] == ["created"] * len(samples), results
        assert set(self._read_back(adapter)) == {r["id"] for r in samples}, (
            "after commit() every record the session answered for must read back"
        )
        self._second_session(adapter, samples)

    def _second_session(self, adapter: Adapter, samples: list[Record]) -> None:
        field, changed = self._changed(adapter, samples[1])
        changes = [Change.upsert(samples[0]["id"], samples[0])]
        changes.append(Change.upsert(changed["id"], changed))
        if Capability.DELETE in adapter.capabilities:
            changes.append(Change.delete(samples[2]["id"]))
        with adapter.open_writes() as session:
            actions = [r.action for r in session.write(changes)]
            # as a group of jobs ends: the engine commits its sessions together
            committed = type(session).commit_many([session])
            assert committed == [None], f"commit_many() of one session: {committed!r}"
        assert actions[0] in {"unchanged", "updated"}, actions
        assert actions[1:] == ["updated", "deleted"][: len(actions) - 1], actions
        got = self._read_back(adapter)
        assert got[changed["id"]].get(field) == changed[field], "the update was not committed"
        if Capability.DELETE in adapter.capabilities:
            assert samples[2]["id"] not in got, "the delete was not committed"

    def test_an_aborted_write_session_changes_nothing(self, adapter: Adapter) -> None:
        """A deferred session left without commit() (the run stopped) leaves the target as
        it was: the engine keeps those batches outstanding and decides them again."""
        self._require(adapter, Capability.WRITE)
        samples = self._populate(adapter, 3)
        before = self._read_back(adapter)
        with adapter.open_writes() as session:
            if not session.deferred:
                pytest.skip("the adapter's write session is immediate")
            _, changed = self._changed(adapter, samples[0])
            extra = self._samples(adapter, 4)[3]
            list(session.write([Change.upsert(changed["id"], changed)]))
            list(session.write([Change.upsert(extra["id"], extra)]))
        assert self._read_back(adapter) == before, "an aborted session changed the target"

    def test_per_job_records_survive_two_writers_at_once(self, adapter: Adapter) -> None:
        """PER_JOB_RECORDS: two jobs writing one connection at once lose none of each other's
        records (the engine then lets both name it as their target)."""
        self._require(adapter, Capability.WRITE, Capability.PER_JOB_RECORDS)
        self._populate(adapter, 0)  # checks the fixture's target is empty
        samples = self._samples(adapter, 12)
        with _twin(adapter) as twin, ThreadPoolExecutor(2) as pool:
            halves = [(adapter, samples[0::2]), (twin, samples[1::2])]
            done = [pool.submit(self._write_one_by_one, *half) for half in halves]
            for future in done:
                future.result()
        missing = {r["id"] for r in samples} - set(self._read_back(adapter))
        assert not missing, (
            f"two writers at once lost {len(missing)} of {len(samples)} records: drop "
            "Capability.PER_JOB_RECORDS unless each record is written on its own"
        )

    def _write_one_by_one(self, adapter: Adapter, records: list[Record]) -> None:
        for record in records:
            self._write(adapter, [Change.upsert(record["id"], record)])

    def test_written_paths_are_never_followed(self, adapter: Adapter) -> None:
        """A symbolic link at a path in ``written_paths`` stops the write and is not followed."""
        self._require(adapter, Capability.WRITE)
        settings = adapter.settings
        paths = {n: getattr(settings, n, None) for n in sorted(type(settings).written_paths)}
        if not paths:
            pytest.skip("the adapter declares no written_paths")
        [sample] = sample_records(1)
        for name, path in paths.items():
            assert path is None or settings.local_paths().get(name) == path, (
                f"written_paths names {name!r}, which must be a Path setting in local_paths()"
            )
            if path is None or path.is_dir():
                continue
            decoy = path.with_name(f"kit-decoy-{path.name}")
            decoy.write_bytes(b"kit decoy\n")
            path.unlink(missing_ok=True)  # the fixture's adapter holds nothing yet
            path.symlink_to(decoy)
            exc = raised(lambda: list(adapter.write([Change.upsert("kit-link", sample)])))
            assert isinstance(exc, ConnectorError), (
                f"a symbolic link at {name} must stop the write with a ConnectorError "
                f"(connector_core.files.LinkRefused); write() gave {exc!r}"
            )
            assert path.is_symlink(), f"the write replaced the link at {name}"
            assert decoy.read_bytes() == b"kit decoy\n", f"the write followed the link at {name}"

    def test_read_only_adapters_refuse_writes(self, adapter: Adapter) -> None:
        """An adapter without WRITE raises WriteNotSupported and changes nothing."""
        if Capability.WRITE in adapter.capabilities:
            pytest.skip("the adapter declares write")
        before = self._existing(adapter)
        [sample] = sample_records(1)
        exc = raised(lambda: list(adapter.write([Change.upsert("kit-refused", sample)])))
        assert isinstance(exc, AdapterError), (
            "write() on an adapter without Capability.WRITE must raise WriteNotSupported "
            f"(the base class does); it raised {exc!r}"
        )
        assert len(read_records(adapter)) == len(before), "a refused write changed the data"

    def test_adapters_without_delete_refuse_deletes(self, adapter: Adapter) -> None:
        """An adapter with WRITE but not DELETE refuses deletes."""
        self._require(adapter, Capability.WRITE)
        if Capability.DELETE in adapter.capabilities:
            pytest.skip("the adapter declares delete")
        [sample] = self._populate(adapter, 1)
        results: list[WriteResult] = []
        exc = raised(lambda: results.extend(adapter.write([Change.delete(sample["id"])])))
        assert isinstance(exc, AdapterError) or (exc is None and results and not results[0].ok), (
            "an adapter without Capability.DELETE must raise WriteNotSupported for a delete, "
            f"or report it failed; it gave {exc!r} / {results!r}"
        )
        assert sample["id"] in self._read_back(adapter), "the refused delete removed the record"

    def test_write_results_match_changes(self, adapter: Adapter) -> None:
        """write() yields one result per change, same keys, same order, fitting actions."""
        self._require(adapter, Capability.WRITE)
        changes = [Change.upsert(r["id"], r) for r in self._samples(adapter, 3)]
        if Capability.DELETE in adapter.capabilities:
            changes.append(Change.delete("kit-never-existed"))
        results = self._apply(adapter, changes)
        assert all(isinstance(r, WriteResult) for r in results), "write() must yield WriteResult"
        assert [r.key for r in results] == [c.key for c in changes], (
            "write() must yield one result per change, with the same keys, in the same order"
        )
        for change, result in zip(changes, results, strict=True):
            allowed = _UPSERT_ACTIONS if change.action == "upsert" else _DELETE_ACTIONS
            assert result.action in allowed, f"{change.action} of {change.key}: {result!r}"

    # -- incremental reads ----------------------------------------------------------------------

    def test_incremental_cursor(self, adapter: Adapter) -> None:
        """A cursor read returns nothing when nothing changed, and later changes when they did."""
        self._require(adapter, Capability.INCREMENTAL)
        samples = self._populate(adapter, 3)
        cursor = read_pages(adapter)[-1].cursor
        assert cursor is not None, "an incremental adapter must give each page a cursor"
        again = read_pages(adapter, cursor=cursor)
        assert again, "a read with no changes must still yield one (empty) page with a cursor"
        stale = [r.get("id") for p in again for r in p.records]
        assert not stale, f"nothing changed since the cursor, yet read() returned {stale[:10]}"
        cursor = again[-1].cursor
        assert cursor is not None, "the empty page of an unchanged read must carry a cursor"
        if not samples:
            return
        field, changed = self._changed(adapter, samples[0])
        self._write(adapter, [Change.upsert(changed["id"], changed)])
        got = {self.record_key(r): r for r in read_records(adapter, cursor=cursor)}
        assert changed["id"] in got, "a record written after the cursor must be read back"
        assert got[changed["id"]].get(field) == changed[field], "the incremental read is stale"

    # -- secrets and lifecycle ------------------------------------------------------------------

    def _require_kit_secrets(self, adapter: Adapter) -> None:
        for ref in secret_refs(adapter.settings):
            try:
                value: str | None = adapter.secrets.resolve(ref).get_secret_value()
            except Exception:
                value = None
            assert value == CANARY_SECRET, (
                "build the adapter with the kit's `connector_secrets` fixture, so the suite "
                "can check its secrets never leak"
            )

    def _leak_steps(self, adapter: Adapter) -> dict[str, Any]:
        steps: dict[str, Any] = {"check()": adapter.check, "read()": lambda: read_records(adapter)}
        if Capability.WRITE in adapter.capabilities:
            changes = [Change.upsert(r["id"], r) for r in self._samples(adapter, 1)]
            steps["write()"] = lambda: list(adapter.write(changes))
        return steps

    def test_secrets_absent_from_errors_and_logs(
        self, adapter: Adapter, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The secret never shows in errors, logs, output, reprs or dumped settings."""
        self._require_kit_secrets(adapter)
        for logger in ("", "connector", type(adapter).__module__.split(".")[0]):
            caplog.set_level(logging.DEBUG, logger=logger)  # a quieter parent must not hide leaks
        settings = adapter.settings
        texts = {
            "repr(adapter)": repr(adapter),
            "repr(settings)": repr(settings),
            "str(settings)": str(settings),
            "settings JSON": settings.model_dump_json(),
        }
        for where, step in self._leak_steps(adapter).items():
            exc = raised(step)
            if exc is not None:
                texts[f"the error from {where}"] = "\n".join(exception_texts(exc))
        out = capsys.readouterr()
        texts |= {"logs": caplog.text, "stdout": out.out, "stderr": out.err}
        texts["log arguments"] = "\n".join(r.getMessage() for r in caplog.records)
        leaks = sorted(where for where, text in texts.items() if CANARY_SECRET in text)
        assert not leaks, f"a secret value appeared in: {', '.join(leaks)}"

    def test_close_is_idempotent(self, adapter: Adapter) -> None:
        """close() may be called more than once."""
        adapter.close()
        adapter.close()

    def test_context_manager_closes(
        self, adapter: Adapter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`with adapter:` returns the adapter, closes it once and re-raises errors."""
        calls: list[bool] = []
        close = adapter.close

        def counting_close() -> None:
            calls.append(True)
            close()

        monkeypatch.setattr(adapter, "close", counting_close)
        with adapter as entered:
            assert entered is adapter, "__enter__ must return the adapter itself"
        assert calls == [True], "leaving a `with adapter:` block must call close() once"
        exc = raised(lambda: self._raise_inside(adapter))
        assert isinstance(exc, LookupError), "__exit__ must not swallow exceptions"

    @staticmethod
    def _raise_inside(adapter: Adapter) -> None:
        with adapter:
            raise LookupError("raised inside the with block")


def _twin(adapter: Adapter) -> Adapter:
    """A second adapter on the same connection, as a second job would open it."""
    mapping: dict[str, str | None] = dict(adapter.mapping.entries)
    mapping.update((f, None) for f in adapter.default_mapping if f not in mapping)
    return type(adapter)(
        adapter.settings, adapter.secrets, mapping=mapping, connection=adapter.connection
    )
