"""The machine's PostgreSQL for the state-store tests: the server URL and an admin engine.

The session fixture ``pg_database`` (in tests/conftest.py) creates one database per test
session; tests then make a schema of their own in it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent

# The server to test on; CONNECTOR_TEST_POSTGRES overrides it (no database name at the end).
PG_SERVER = os.environ.get(
    "CONNECTOR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
)


def _admin(database: str) -> sa.Engine:
    return sa.create_engine(
        f"{PG_SERVER}/{database}",
        isolation_level="AUTOCOMMIT",
        poolclass=sa.NullPool,
        connect_args={"connect_timeout": 5},
    )


def new_schema(database_url: str, prefix: str = "test") -> tuple[str, str]:
    """A fresh schema in the database at `database_url`: its name, and the URL of a store in
    it (chosen through the URL's search_path, so child processes given the URL land in the
    same schema)."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = _admin(database_url.rsplit("/", 1)[1])
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    return schema, f"{database_url}?options=-csearch_path%3D{schema}"


def drop_schema(database_url: str, schema: str) -> None:
    """Drop a schema :func:`new_schema` made in the database at `database_url`."""
    admin = _admin(database_url.rsplit("/", 1)[1])
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()
