"""Opening a store at the newest schema is cheap: no alembic unless there is work for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from connector_core.errors import ConfigError
from connector_core.sync import migrations
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY


def test_head_is_the_newest_revision_of_the_scripts() -> None:
    # A new revision must update HEAD, or stores would not be migrated to it.
    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert script.get_heads() == [migrations.HEAD]


def test_a_fresh_store_needs_the_upgrade_and_one_at_head_does_not(state_url: str) -> None:
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        assert migrations.current_revisions(conn) == set()
        assert migrations.needs_upgrade(conn)
    StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY).close()
    with engine.connect() as conn:
        assert migrations.current_revisions(conn) == {migrations.HEAD}
        assert not migrations.needs_upgrade(conn)
    engine.dispose()


def test_opening_a_store_at_head_does_not_import_alembic(state_url: str) -> None:
    StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY).close()  # created and migrated
    probe = textwrap.dedent(
        """
        import sys
        from connector_core.sync.state import StateStore
        StateStore.open(sys.argv[1]).close()
        print(sorted(m for m in sys.modules if m.split(".")[0] == "alembic"))
        """
    )
    found = subprocess.run(
        [sys.executable, "-c", probe, state_url], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_a_store_from_a_newer_connector_is_still_refused(state_url: str) -> None:
    StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY).close()
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f999'"))
    engine.dispose()
    with pytest.raises(ConfigError, match="schema is unknown to this version"):
        StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY)
