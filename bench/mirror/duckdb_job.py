"""DuckDB: one ``COPY (SELECT ...) TO`` statement, every column read as text.

    python bench/mirror/duckdb_job.py SOURCE OUT

Keeps the source id as the key; bench/mirror_bench.py maps it.
"""

import sys

import duckdb


def guard(column):
    return (
        f"CASE WHEN regexp_matches({column}, '^[=+\\-@\\t\\r]') "
        f"THEN '''' || {column} ELSE {column} END AS {column}"
    )


ALNUM = "regexp_replace(phone, '[^A-Za-z0-9]', '', 'g')"
LAST4 = (
    f"CASE WHEN length({ALNUM}) > 4 "
    f"THEN repeat('*', length({ALNUM}) - 4) || right({ALNUM}, 4) END AS phone"
)


def main(source, out):
    query = f"""
        COPY (
            SELECT id, {guard("first_name")}, {guard("last_name")}, {LAST4}, {guard("city")}
            FROM read_csv('{source}', header = true, all_varchar = true)
            WHERE local_organizing = 'yes' AND region = 'North'
              AND is_deceased IS DISTINCT FROM 'yes'
        ) TO '{out}' (HEADER, DELIMITER ',')
    """
    duckdb.sql(query)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
