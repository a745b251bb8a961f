"""Alembic migrations of the state store, run by :meth:`StateStore.open` (no alembic.ini).

To write a new revision against a development database::

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        alembic.command.revision(cfg, message="what changed", autogenerate=True)
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection


def alembic_config() -> Config:
    """An Alembic configuration built in code, pointing at this package's scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", "connector_core.sync:migrations")
    return cfg


def upgrade(connection: Connection) -> None:
    """Bring the schema reachable through `connection` to the newest revision.

    Runs inside the caller's transaction, which is expected to serialize concurrent callers.
    """
    if not needs_upgrade(connection):
        return  # another process did it while we waited for the lock
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def needs_upgrade(connection: Connection) -> bool:
    """Whether the schema behind `connection` is older than the newest revision."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return MigrationContext.configure(connection).get_current_revision() != head
