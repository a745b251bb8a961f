"""State store cost: bytes per shared record and the PostgreSQL/SQLite time ratio.

Builds the intent benchmark's network (a CSV source, a memory target, every record shared),
runs one first run on a fresh SQLite store and on a fresh PostgreSQL database, alternating,
and reports each run's wall time, the id map and ledger size per shared record (SQLite: the
dbstat virtual table; PostgreSQL: pg_total_relation_size, indexes and TOAST included).

    uv run --no-sync python -m bench.state_bench --records 100000 --rounds 2
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
from pathlib import Path

import sqlalchemy as sa

from bench.intent_bench import state_url, timed_run, write_network

TABLES = ("id_map", "ledger")


def sqlite_bytes(path: Path) -> dict[str, int]:
    """Bytes per table, its indexes included (dbstat), of the SQLite file at `path`."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE tbl_name != ''")
        owner = dict(rows)
        sizes: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            sizes[table] = sizes.get(table, 0) + int(size)
        return sizes
    finally:
        conn.close()


def pg_bytes(url: str) -> dict[str, int]:
    """Bytes per table, indexes and TOAST included, of the PostgreSQL store at `url`."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT tablename, pg_total_relation_size(quote_ident(tablename)) "
                    "FROM pg_tables WHERE schemaname = current_schema()"
                )
            )
            return {name: int(size) for name, size in rows}
    finally:
        engine.dispose()


def main() -> None:
    """Run the rounds and print one line per run and a summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="state-bench-"))
    write_network(root, args.records, args.batch, "sqlite:///unused.db")
    times: dict[str, list[float]] = {}
    for n in range(args.rounds):
        for kind in args.backends.split(","):
            url = state_url(kind, root, f"{kind}{n}")
            seconds, counts = timed_run(root, url, intent_log=True)
            shared = counts["created"]
            if kind == "sqlite":
                sizes = sqlite_bytes(Path(url.removeprefix("sqlite:///")))
            else:
                sizes = pg_bytes(url)
            per = {t: sizes.get(t, 0) / max(shared, 1) for t in sizes}
            lean = sum(per.get(t, 0) for t in TABLES)
            times.setdefault(kind, []).append(seconds)
            detail = ", ".join(f"{t} {per[t]:.0f}" for t in sorted(per) if per[t] >= 1)
            print(
                f"{kind:10} round {n}: {seconds:6.2f} s, {shared} shared, "
                f"id map + ledger {lean:.0f} B/record ({detail})",
                flush=True,
            )
    if "sqlite" in times and "postgresql" in times:
        ratio = statistics.median(times["postgresql"]) / statistics.median(times["sqlite"])
        print(f"PostgreSQL / SQLite (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
