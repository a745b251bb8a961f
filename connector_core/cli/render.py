"""Plain text rendering for the CLI: aligned tables and readable cells."""

from __future__ import annotations

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
