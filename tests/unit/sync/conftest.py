"""State store fixtures: every test runs on a SQLite file and on the machine's PostgreSQL.

PostgreSQL gets a fresh database per session and a fresh schema per test (chosen through the
URL's search_path, so child processes given the URL land in the same schema). Without a
reachable server the PostgreSQL half is skipped locally and fails in CI (env CI set).
"""

from __future__ import annotations

import contextlib
import gc
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector_core.sync.model import AppliedChange
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, reset_memory_stores
from tests.postgres import REPO, drop_schema, new_schema
from tests.unit.sync.test_runner import Network, PickyAdapter, PushdownAdapter


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty state store, on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    base: str = request.getfixturevalue("pg_database")
    schema, url = new_schema(base)
    yield url
    drop_schema(base, schema)


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    """An open, migrated state store (closed after the test)."""
    opened = StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY)
    yield opened
    opened.close()


@pytest.fixture
def raw_engine(state_url: str) -> Iterator[sa.Engine]:
    """An engine on the store's database that bypasses the store (for tampering with it)."""
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(params=["blocks of 256 lines", "small blocks"])
def block_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A test twice: with the CSV adapter's blocks as they are (too big for a test's files:
    every row is in the header's block, split row by row) and with blocks of a few lines
    and parts of two (most rows in blocks kept whole, found unchanged or changed; the
    unchanged parts of a changed block listed with the ids and fingerprints kept)."""
    import connector_csv.adapter as adapter_module
    import connector_csv.rows as rows_module

    if request.param == "small blocks":
        monkeypatch.setattr(rows_module, "_MARKS", bytes(b % 3 != 0 for b in range(256)))
        monkeypatch.setattr(rows_module, "_BLOCK_MAX", 120)
        monkeypatch.setattr(rows_module, "PART_ROWS", 2)
        monkeypatch.setattr(adapter_module, "PART_ROWS", 2)
    return str(request.param)


def change(
    source_id: str, action: str = "create", *, key: str | None = None, digest: str = "a"
) -> AppliedChange:
    """An applied change with labels only, as the runner makes them."""
    return AppliedChange(
        action=action,  # type: ignore[arg-type]
        source_id=source_id,
        target_key=key or f"key-{source_id}",
        projection_hash=None if action == "delete" else digest * 64,
        fields={} if action == "delete" else {"email": "show", "phone": "mask:last4"},
        consent_basis={"contact_me": {"granted": True, "source": "civicrm", "at": "2024-05-01"}},
        reason="shared:members" if action != "delete" else "consent withdrawn",
    )


@pytest.fixture
def make_change() -> Callable[..., AppliedChange]:
    """The :func:`change` factory."""
    return change


def statements(store: StateStore, containing: str) -> list[str]:
    """The SQL statements `store` sends from now on that contain `containing` (a list that
    grows as they are sent)."""
    seen: list[str] = []

    def note(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        if containing in sql:
            seen.append(sql)

    sa.event.listen(store._engine, "before_cursor_execute", note)
    return seen


class Children:
    """Python child processes started by a test; any still running are killed at its end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, code: str, *args: str) -> subprocess.Popen[str]:
        """Run `code` with `args` in a fresh interpreter, its stdout readable line by line."""
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill and reap every child."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)


@pytest.fixture
def children() -> Iterator[Children]:
    """Start child processes that cannot outlive the test."""
    started = Children()
    yield started
    started.close()


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    """Empty memory stores for every test."""
    reset_memory_stores()
    PushdownAdapter.wheres.clear()
    yield
    reset_memory_stores()
    PickyAdapter.refuse_deletes = False


@pytest.fixture
def net(tmp_path: Path) -> Network:
    """The runner tests' network, with two northerners and one southerner."""
    network = Network(tmp_path)
    network.put("p1")
    network.put("p2", first_name="Bruno", city="York")
    network.put("p3", region="South")
    return network


@contextlib.contextmanager
def finished_runs_uncollected(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[list[weakref.ref[Any]]]:
    """A weak reference to each run as it finishes, with the cyclic collector off for the
    block: a run still alive after its caller dropped it is held by a reference cycle."""
    from connector_core.sync import runner

    refs: list[weakref.ref[Any]] = []
    finish = runner._Run.finish
    monkeypatch.setattr(
        runner._Run, "finish", lambda run: refs.append(weakref.ref(run)) or finish(run)
    )
    gc.collect()
    gc.disable()
    try:
        yield refs
    finally:
        gc.enable()
