"""The conformance kit fails deliberately broken adapters, on the right tests, with clear words.

Each case writes a memory-adapter subclass with one defect into a throwaway test module, runs
the kit on it with pytester, and compares the kit tests that failed with the ones expected.
"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

HEADER = """
from __future__ import annotations

import logging
import uuid

import pytest
from pydantic import ConfigDict

from connector_core.adapters import Adapter, Capability, Change, Page, SourceFields, WriteResult
from connector_core.credentials import SecretRef
from connector_core.errors import AuthenticationFailed
from connector_core.testing import (
    AdapterConformance, MemoryAdapter, MemorySettings, reset_memory_stores, sample_records,
)

RW = frozenset({Capability.READ, Capability.WRITE, Capability.DELETE, Capability.INCREMENTAL})


class LeakySettings(MemorySettings):
    token: SecretRef = SecretRef(secret="token")
"""

FOOTER = """
class TestBroken(AdapterConformance):
    @pytest.fixture
    def adapter(self, connector_secrets, request):
        store = request.node.nodeid
        reset_memory_stores(store)
        if Capability.WRITE not in Broken.capabilities:
            seed = MemoryAdapter(MemorySettings(store=store))
            list(seed.write([Change.upsert(r["id"], r) for r in sample_records(3)]))
        return Broken(Broken.settings_model(store=store, page_size=2), connector_secrets)
"""


@dataclasses.dataclass(frozen=True)
class Case:
    """A broken adapter, the kit tests it must fail, and words the failure must contain."""

    adapter: str
    fails: frozenset[str]
    says: str = ""


def case(adapter: str, *fails: str, says: str = "") -> Case:
    return Case(textwrap.dedent(adapter), frozenset(fails), says)


ROUND_TRIP = "test_write_then_read_round_trip"
LEAKS = "test_secrets_absent_from_errors_and_logs"

CASES = {
    "read-returns-a-list": case(
        """
        class Broken(MemoryAdapter):
            def read(self, **kwargs):
                return list(super().read(**kwargs))
        """,
        "test_read_is_lazy",
        says="must return an iterator of Page",
    ),
    "read-iterates-a-ready-list": case(
        """
        class Broken(MemoryAdapter):
            def read(self, **kwargs):
                return iter(list(super().read(**kwargs)))
        """,
        "test_read_is_lazy",
        says="ready-made list",
    ),
    "ignores-page-size": case(
        """
        class Broken(MemoryAdapter):
            def read(self, **kwargs):
                pages = list(super().read(**kwargs))
                yield Page([r for p in pages for r in p.records], pages[-1].cursor)
        """,
        "test_read_is_lazy",
        says="at most page_size=2",
    ),
    "duplicate-ids": case(
        """
        class Broken(MemoryAdapter):
            def read(self, **kwargs):
                for page in super().read(**kwargs):
                    yield Page(page.records + page.records[:1], page.cursor)
        """,
        "test_keys_are_unique_and_stable",
        "test_read_is_lazy",
        says="ids must be unique",
    ),
    "unstable-ids": case(
        """
        class Broken(MemoryAdapter):
            def read(self, **kwargs):
                for page in super().read(**kwargs):
                    records = [{**r, "id": uuid.uuid4().hex} for r in page.records]
                    yield Page(records, page.cursor)
        """,
        "test_keys_are_unique_and_stable",
        "test_read_with_fields_keeps_every_record",
        ROUND_TRIP,
        "test_rewrite_is_idempotent",
        "test_update_changes_a_field",
        "test_delete",
        "test_incremental_cursor",
        "test_write_session_takes_a_run_in_batches",
        says="ids must be stable",
    ),
    "loses-a-field-on-write": case(
        """
        class Broken(MemoryAdapter):
            def write(self, changes):
                for c in changes:
                    if c.record is not None:
                        c = Change.upsert(c.key, {k: v for k, v in c.record.items() if k != "city"})
                    yield from super().write([c])
        """,
        ROUND_TRIP,
        says="city: wrote 'Berlin', read back None",
    ),
    "non-canonical-keys": case(
        """
        class Broken(MemoryAdapter):
            def read(self, **kwargs):
                for page in super().read(**kwargs):
                    yield Page([{**r, "E-Mail": r.get("email")} for r in page.records], page.cursor)
        """,
        "test_records_use_canonical_fields",
        says="'E-Mail'",
    ),
    "wrong-value-types": case(
        """
        class Broken(MemoryAdapter):
            def read(self, **kwargs):
                for page in super().read(**kwargs):
                    yield Page([{**r, "do_not_phone": "no"} for r in page.records], page.cursor)
        """,
        "test_values_have_canonical_types",
        ROUND_TRIP,
        says="do_not_phone must be a boolean",
    ),
    "leaks-secret-in-error": case(
        """
        class Broken(MemoryAdapter):
            settings_model = LeakySettings
            def check(self):
                token = self.secrets.resolve(self.settings.token).get_secret_value()
                raise AuthenticationFailed(f"the server refused token {token}")
        """,
        LEAKS,
        says="the error from check()",
    ),
    "leaks-secret-in-a-log": case(
        """
        class Broken(MemoryAdapter):
            settings_model = LeakySettings
            def read(self, **kwargs):
                token = self.secrets.resolve(self.settings.token)
                logging.getLogger("broken").debug("auth %s", token.get_secret_value())
                return super().read(**kwargs)
        """,
        LEAKS,
        says="logs",
    ),
    "leaks-secret-in-repr": case(
        """
        class Broken(MemoryAdapter):
            settings_model = LeakySettings
            def __repr__(self):
                return f"<Broken {self.secrets.resolve(self.settings.token).get_secret_value()}>"
        """,
        LEAKS,
        says="repr(adapter)",
    ),
    "write-does-nothing": case(
        """
        class Broken(MemoryAdapter):
            def write(self, changes):
                for c in changes:
                    yield WriteResult(c.key, "created" if c.action == "upsert" else "deleted")
        """,
        "test_read_is_lazy",
        "test_keys_are_unique_and_stable",
        ROUND_TRIP,
        "test_rewrite_is_idempotent",
        "test_update_changes_a_field",
        "test_delete",
        "test_incremental_cursor",
        "test_write_session_takes_a_run_in_batches",
        says="written but not read back",
    ),
    "ignores-deletes": case(
        """
        class Broken(MemoryAdapter):
            def write(self, changes):
                for c in changes:
                    if c.action == "delete":
                        yield WriteResult(c.key, "deleted")
                    else:
                        yield from super().write([c])
        """,
        "test_delete",
        "test_write_session_takes_a_run_in_batches",
        says="read() must return exactly the other records",
    ),
    "claims-write-but-not-implemented": case(
        """
        class Broken(MemoryAdapter):
            def write(self, changes):
                raise NotImplementedError("later")
        """,
        "test_read_is_lazy",
        "test_keys_are_unique_and_stable",
        "test_records_use_canonical_fields",
        "test_values_have_canonical_types",
        "test_read_with_fields_keeps_every_record",
        ROUND_TRIP,
        "test_rewrite_is_idempotent",
        "test_update_changes_a_field",
        "test_delete",
        "test_write_results_match_changes",
        "test_incremental_cursor",
        "test_available_fields_describe_what_a_read_fills",
        "test_count_matches_a_full_read",
        "test_an_aborted_write_session_changes_nothing",
        "test_write_session_takes_a_run_in_batches",
        says="although the adapter declares Capability.WRITE",
    ),
    "count-is-off-by-one": case(
        """
        class Broken(MemoryAdapter):
            def count(self):
                return len(self._store.records) + 1
        """,
        "test_count_matches_a_full_read",
        says="a full read listed",
    ),
    "available-fields-hide-what-read-fills": case(
        """
        class Broken(MemoryAdapter):
            def available_fields(self):
                return SourceFields(frozenset({"id"}), source="nothing")
        """,
        "test_available_fields_describe_what_a_read_fills",
        says="which available_fields().provided does not list",
    ),
    "rewrite-creates-duplicates": case(
        """
        class Broken(MemoryAdapter):
            def write(self, changes):
                for c in changes:
                    known = c.key in self._store.records
                    key = f"{c.key}-{uuid.uuid4().hex[:6]}" if known else c.key
                    [result] = super().write([Change(c.action, key, c.record)])
                    yield WriteResult(c.key, result.action)
        """,
        "test_rewrite_is_idempotent",
        "test_update_changes_a_field",
        "test_delete",
        "test_incremental_cursor",
        "test_write_session_takes_a_run_in_batches",
        says="must report unchanged",
    ),
    "results-out-of-order": case(
        """
        class Broken(MemoryAdapter):
            def write(self, changes):
                return reversed(list(super().write(changes)))
        """,
        "test_write_results_match_changes",
        "test_write_session_takes_a_run_in_batches",
        says="in the same order",
    ),
    "read-only-but-stores-writes": case(
        """
        class Broken(MemoryAdapter):
            capabilities = frozenset({Capability.READ})
        """,
        "test_read_only_adapters_refuse_writes",
        says="must raise WriteNotSupported",
    ),
    "read-only-raising-not-implemented": case(
        """
        class Broken(MemoryAdapter):
            capabilities = frozenset({Capability.READ})
            def write(self, changes):
                raise NotImplementedError("read-only")
        """,
        "test_read_only_adapters_refuse_writes",
        says="NotImplementedError('read-only')",
    ),
    "deletes-without-the-capability": case(
        """
        class Broken(MemoryAdapter):
            capabilities = frozenset({Capability.READ, Capability.WRITE})
        """,
        "test_adapters_without_delete_refuse_deletes",
        says="without Capability.DELETE",
    ),
    "ignores-the-cursor": case(
        """
        class Broken(MemoryAdapter):
            def read(self, *, cursor=None, **kwargs):
                return super().read(cursor=None, **kwargs)
        """,
        "test_incremental_cursor",
        says="nothing changed since the cursor",
    ),
    "bad-name": case(
        """
        class Broken(MemoryAdapter):
            name = "Memory-Copy"
        """,
        "test_name_is_a_lowercase_identifier",
        says="Python identifier",
    ),
    "settings-accept-anything": case(
        """
        class Settings(MemorySettings):
            model_config = ConfigDict(extra="allow")

        class Broken(MemoryAdapter):
            settings_model = Settings
        """,
        "test_settings_model_rejects_unknown_keys",
        "test_settings_model_has_json_schema",
        says="accepted an unknown key",
    ),
    "token-as-plain-string": case(
        """
        class Settings(MemorySettings):
            api_token: str = "x"

        class Broken(MemoryAdapter):
            settings_model = Settings
        """,
        "test_secret_like_settings_use_secretref",
        says="['api_token']",
    ),
    "exit-swallows-errors": case(
        """
        class Broken(MemoryAdapter):
            def __exit__(self, *exc_info):
                self.close()
                return True
        """,
        "test_context_manager_closes",
        says="must not swallow",
    ),
}


CORRECT = {
    "correct-writable": case(
        """
        class Broken(MemoryAdapter):
            pass
        """
    ),
    "correct-read-only": case(
        """
        class Broken(MemoryAdapter):
            capabilities = frozenset({Capability.READ})
            write = Adapter.write
        """
    ),
}


def _module(name: str) -> str:
    return "test_" + name.replace("-", "_")


def _run_kit(pytester: pytest.Pytester, cases: dict[str, Case]) -> list[pytest.TestReport]:
    """Run the kit once over one module per case; return every test report."""
    pytester.makepyfile(**{_module(n): HEADER + c.adapter + FOOTER for n, c in cases.items()})
    reprec = pytester.inline_run("-p", "no:cacheprovider")
    return reprec.getreports("pytest_runtest_logreport")


def _failures(reports: list[pytest.TestReport], name: str) -> dict[str, str]:
    """The kit tests that failed for one case, with their failure text."""
    prefix = _module(name) + ".py::"
    return {
        r.nodeid.rsplit("::", 1)[-1]: r.longreprtext
        for r in reports
        if r.nodeid.startswith(prefix) and r.when == "call" and r.failed
    }


def test_kit_fails_each_broken_adapter_on_the_right_tests(pytester: pytest.Pytester) -> None:
    reports = _run_kit(pytester, CASES | CORRECT)
    errors = [r.nodeid for r in reports if r.when != "call" and r.failed]
    assert not errors, f"the kit itself errored in setup or teardown: {errors}"
    failed = {name: _failures(reports, name) for name in CASES | CORRECT}
    assert {n: set(f) for n, f in failed.items()} == {
        n: set(c.fails) for n, c in (CASES | CORRECT).items()
    }
    unclear = [n for n, c in CASES.items() if not any(c.says in t for t in failed[n].values())]
    assert not unclear, f"failure messages lack the expected words: {unclear}"


def test_plugin_loads_through_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from connector_core.credentials import SecretRef
        from connector_core.testing import CANARY_SECRET

        @pytest.mark.live
        def test_live_is_a_known_marker():
            pass

        def test_fixtures(connector_secrets, memory_adapter):
            value = connector_secrets.resolve(SecretRef(secret="any")).get_secret_value()
            assert value == CANARY_SECRET
            assert list(memory_adapter.read())[0].records == []
        """
    )
    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
