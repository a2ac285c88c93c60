"""Plain-text rendering for the operator commands and the demo: tables, money, durations."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int | None = None) -> str:
    """Aligned columns; the widest column is cut to fit the terminal."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    limit = max_width or shutil.get_terminal_size((160, 24)).columns
    gap = 2
    while sum(widths) + gap * (len(widths) - 1) > limit and max(widths) > 12:
        widest = widths.index(max(widths))
        widths[widest] -= 1

    def line(values: Sequence[str]) -> str:
        parts = []
        for value, width in zip(values, widths, strict=True):
            parts.append(value if len(value) <= width else value[: width - 1] + "…")
        return (" " * gap).join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def money(amount: float | None, currency: str | None = "USD") -> str:
    if amount is None:
        return "-"
    symbol = "$" if (currency or "USD") == "USD" else f"{currency} "
    return f"{symbol}{amount:,.4f}".rstrip("0").rstrip(".") if amount else f"{symbol}0"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"
