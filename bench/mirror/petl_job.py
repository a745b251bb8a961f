"""petl: the same filter and projection as a petl pipeline (``fromcsv`` ... ``tocsv``).

    python bench/mirror/petl_job.py SOURCE OUT

Keeps the source id as the key (petl has no keyed ids); bench/mirror_bench.py maps it.
"""

import sys

import petl as etl

FORMULA = ("=", "+", "-", "@", "\t", "\r")


def last4(value):
    kept = "".join(filter(str.isalnum, value))
    return "*" * (len(kept) - 4) + kept[-4:] if len(kept) > 4 else ""


def guard(cell):
    return "'" + cell if cell.startswith(FORMULA) else cell


def main(source, out):
    table = (
        etl.fromcsv(source, encoding="utf-8")
        .select(
            lambda r: r.local_organizing == "yes" and r.region == "North" and r.is_deceased != "yes"
        )
        .cut("id", "first_name", "last_name", "phone", "city")
        .convert("phone", last4)
        .convert(("first_name", "last_name", "phone", "city"), guard)
    )
    etl.tocsv(table, out, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
