"""Alembic migrations of the state store, run by :meth:`StateStore.open` (no alembic.ini).

To write a new revision against a development database::

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        alembic.command.revision(cfg, message="what changed", autogenerate=True)

and set :data:`HEAD` to its revision id (a test checks it against the scripts).

Opening a store whose schema is already at :data:`HEAD` reads ``alembic_version`` with plain
SQLAlchemy: alembic itself (a third of a second to import) is imported only to upgrade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import Connection

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest revision in versions/ (tests/unit/sync/test_migrations_head.py checks it).
HEAD = "0019_block_parts"

_VERSION_TABLE = "alembic_version"


class MigrationError(Exception):
    """Alembic could not bring the schema to :data:`HEAD` (say, a revision it does not know)."""


def alembic_config() -> Config:
    """An Alembic configuration built in code, pointing at this package's scripts."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "connector_core.sync:migrations")
    return cfg


def upgrade(connection: Connection) -> None:
    """Bring the schema reachable through `connection` to the newest revision.

    Runs inside the caller's transaction, which is expected to serialize concurrent callers.
    """
    if not needs_upgrade(connection):
        return  # another process did it while we waited for the lock
    import alembic.util
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    try:
        command.upgrade(cfg, "head")
    except alembic.util.CommandError as exc:
        raise MigrationError(str(exc)) from exc


def current_revisions(connection: Connection) -> set[str]:
    """The revisions ``alembic_version`` records (none for a fresh database)."""
    if not sa.inspect(connection).has_table(_VERSION_TABLE):
        return set()
    rows = connection.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}"))
    return {row[0] for row in rows}


def needs_upgrade(connection: Connection) -> bool:
    """Whether the schema behind `connection` is other than the newest revision."""
    return current_revisions(connection) != {HEAD}
