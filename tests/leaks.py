"""Helpers for leak tests: every form a secret can take in text, and every text a run left.

The forms are computed here independently of :mod:`connector_core.scrub`, so a test does not
check the scrubber against itself.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import sqlalchemy as sa


def secret_forms(secret: str, user: str | None = None) -> set[str]:
    """The raw secret and its escaped and encoded forms (repr, JSON, URL, HTML, Base64)."""
    raw = secret.encode("utf-8", "surrogatepass")
    forms = {
        secret,
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        html.escape(secret),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    mojibake = raw.decode("latin-1")  # UTF-8 read back as Latin-1 (text/plain, no charset)
    forms |= {mojibake, repr(mojibake)[1:-1]}
    if user is not None:
        forms.add(base64.b64encode(f"{user}:{secret}".encode()).decode().rstrip("="))
    for sent in {raw, secret.encode("latin-1", "replace")}:
        forms.add(sent.hex())  # compared without case, so either hex case
    forms.add("".join(f"\\u{ord(c):04x}" for c in secret))  # JSON escaping every character
    if secret.strip() != secret:
        forms |= secret_forms(secret.strip())
    return {f for f in forms if len(f) >= 4}


#: Any run of this many characters of a secret is a leak (a server echoing a shortened key),
#: unless it is lower-case letters only (a word such as "password" of "wrong-password").
RUN = 8


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}")


def _decoded_runs(text: str) -> Iterator[str]:
    """What every Base64-looking run of `text` decodes to (from 4 offsets, either alphabet)."""
    # Base64 wrapped in lines (MIME), the line breaks possibly JSON-escaped
    unwrapped = re.sub(r"(?:\s|\\[nr])+", "", text)
    for run in _BASE64_RUN.findall(text) + _BASE64_RUN.findall(unwrapped):
        for start in range(4):  # letters glued before the Base64 shift its alignment
            part = run[start:]
            part = part[: len(part) - 1] if len(part) % 4 == 1 else part
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                with contextlib.suppress(ValueError):
                    yield decode(part + "=" * (-len(part) % 4)).decode("utf-8", "replace")


def leaked(secret: str, texts: Iterable[str], user: str | None = None) -> list[str]:
    """The forms of `secret` found in any of `texts` (in any case), also inside Base64, and
    any run of :data:`RUN` of its characters (empty: no leak)."""
    joined = "\n".join(texts)
    joined = (joined + "\n".join(_decoded_runs(joined))).lower()
    stripped = secret.strip()
    runs = {stripped[i : i + RUN] for i in range(len(stripped) - RUN + 1)}
    runs = {r for r in runs if not (r.isascii() and r.isalpha() and r.islower())}  # words
    return sorted(f for f in secret_forms(secret, user) | runs if f.lower() in joined)


def database_text(url: str) -> list[str]:
    """Every row of every table of a state database, as text."""
    engine = sa.create_engine(url)
    try:
        tables = sa.MetaData()
        tables.reflect(engine)
        with engine.connect() as conn:
            return [
                f"{table.name}: {' | '.join(map(str, row))} {tuple(row)!r}"
                for table in tables.sorted_tables
                for row in conn.execute(sa.select(table))
            ]
    finally:
        engine.dispose()


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path}"


# Digests, HMAC keys and times are random digits: "0123" turns up in one of them now and then.
_NOISE = re.compile(
    r"[0-9a-fA-F]{16,}"  # hashes, record keys
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUIDs
    r"|datetime\.datetime\([^)]*\)"  # a time's repr
    r"|\d{4}-\d\d-\d\d[T ][\d:.]+(?:[+-]\d\d:?\d\d|Z)?"  # a time's ISO form
)


def values_in(text: str, values: Iterable[str]) -> list[str]:
    """The `values` that occur in `text` outside its hashes, UUIDs and times."""
    plain = _NOISE.sub(" ", text)
    return [value for value in values if value in plain]
