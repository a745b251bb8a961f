"""Plain text rendering for the CLI: aligned tables and readable cells."""

from __future__ import annotations

import unicodedata

from connector_core.records import to_text


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain aligned text table (stdout stays easy to read and to pipe)."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cell(value: object) -> str:
    """Table text for a value; consent shows as ``purpose:yes`` pairs."""
    if isinstance(value, dict):
        return " ".join(
            f"{k}:{to_text(None, v.get('granted') if isinstance(v, dict) else v)}"
            for k, v in value.items()
        )
    return to_text(None, value)


def literal(text: str) -> str:
    """`text` as a terminal shows it literally: every control or format character (an
    escape sequence, a carriage return, a newline, a direction override, a zero-width
    character) written as its escape (``\\x1b``, ``\\u202e``), so that text from outside
    (a share request's why, a requester's name) can neither redraw nor hide what an
    approver reads."""
    if text.isprintable():
        return text
    return "".join(
        ascii(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in text
    )
