"""The floor: a hand-written stdlib ``csv`` script doing exactly what the mirror job does.

    python -I bench/mirror/floor.py SOURCE OUT JOB SECRET_ENV

Filter (consented to local organizing, in the North, not deceased), project (first name,
last name, city, ``last4`` of the phone), key each row as the connector does (an HMAC-SHA256
of job and source id under the network's key secret, shaped as a UUID version 8), guard
cells a spreadsheet could run as a formula, and write the file atomically (temporary file,
fsync, rename), as the CSV target does. Standard library only: no project import.
"""

import csv
import hashlib
import hmac
import os
import sys

FORMULA = ("=", "+", "-", "@", "\t", "\r")
VARIANT = "89ab"


def last4(value):
    kept = "".join(filter(str.isalnum, value))
    if len(kept) <= 4:
        return ""
    return "*" * (len(kept) - 4) + kept[-4:]


def guard(cell):
    return "'" + cell if cell.startswith(FORMULA) else cell


def main(source, out, job, secret):
    prefix = hmac.new(secret, f"{job}\0".encode(), hashlib.sha256)
    tmp = out + ".tmp"
    with (
        open(source, encoding="utf-8", newline="") as src,
        open(tmp, "w", encoding="utf-8", newline="") as dst,
    ):
        rows = csv.reader(src)
        header = next(rows)
        at = {name: index for index, name in enumerate(header)}
        i_id, i_first, i_last, i_city, i_phone = (
            at[c] for c in ("id", "first_name", "last_name", "city", "phone")
        )
        i_region, i_consent, i_dead = at["region"], at["local_organizing"], at["is_deceased"]
        writer = csv.writer(dst)
        writer.writerow(["id", "first_name", "last_name", "phone", "city"])
        for row in rows:
            if row[i_consent] != "yes" or row[i_region] != "North" or row[i_dead] == "yes":
                continue
            mac = prefix.copy()
            mac.update(row[i_id].encode())
            h = mac.hexdigest()
            key = (
                f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"
            )
            phone = row[i_phone]
            writer.writerow(
                [
                    key,
                    guard(row[i_first]),
                    guard(row[i_last]),
                    guard(last4(phone)) if phone else "",
                    guard(row[i_city]),
                ]
            )
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], os.environ[sys.argv[4]].encode())
