"""The machine's PostgreSQL for the state-store tests: the server URL and an admin engine.

The session fixture ``pg_database`` (in tests/conftest.py) creates one database per test
session; tests then make a schema of their own in it.
"""

from __future__ import annotations

import os
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
