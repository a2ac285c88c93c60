"""Rendering for the operator commands and the demo: tables (rich), JSON values, money, durations."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from collections.abc import Collection, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

# How a state reads at a glance on a terminal; states not named here are on their way.
STATE_STYLES = {
    "COMPLETED": "green",
    "FAILED": "bold red",
    "REJECTED": "red",
    "CANCELLED": "yellow",
}
WAITING_STYLE = "cyan"
_STATE_HEADER = "STATE"
# Below this a folding column would be unreadable; the table grows past the terminal instead.
_NARROWEST_FOLD = 8
# A column whose every value is this short (a time, a cost, a count) is kept whole too.
_SHORT = 20
_GAP = 3  # rich's padding between columns with box.SIMPLE_HEAD


def use_colour() -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def state_text(state: str, *, colour: bool) -> Text:
    return Text(state, style=STATE_STYLES.get(state, WAITING_STYLE) if colour else "")


def painted_state(state: str, *, colour: bool) -> str:
    """A state for a line of text: with its colour's escape codes on a terminal, else plain."""
    if not colour:
        return state
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system="standard", highlight=False).print(
        state_text(state, colour=True), end=""
    )
    return out.getvalue()


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    keep: Collection[int] = (0,),
    max_width: int | None = None,
    colour: bool | None = None,
) -> str:
    """Aligned columns. The `keep` columns (ids) are never cut or wrapped, so a value can be copied
    into the next command; every other cell folds onto more lines when the terminal is narrow, and
    multi-line values stay inside their cell. A STATE column and columns of short values are kept too;
    states are coloured on a terminal."""
    colour = use_colour() if colour is None else colour
    state_column = headers.index(_STATE_HEADER) if _STATE_HEADER in headers else None
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    kept_widths = _kept_widths(headers, cells, {*keep, *([state_column] if state_column is not None else [])})
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold" if colour else "")
    for i, header in enumerate(headers):
        if i in kept_widths:
            grid.add_column(header, no_wrap=True, min_width=kept_widths[i])
        else:
            grid.add_column(header, overflow="fold", min_width=min(len(header), _NARROWEST_FOLD))
    for row in cells:
        # Text, not markup: an error message with [brackets] is shown as it is.
        grid.add_row(
            *(state_text(v, colour=colour) if i == state_column else Text(v) for i, v in enumerate(row))
        )
    narrowest = sum(kept_widths.values()) + sum(
        min(len(h), _NARROWEST_FOLD) for i, h in enumerate(headers) if i not in kept_widths
    )
    terminal = max_width or shutil.get_terminal_size((160, 24)).columns
    return _rendered(grid, width=max(terminal, narrowest + _GAP * (len(headers) - 1)), colour=colour)


def _kept_widths(headers: Sequence[str], cells: list[list[str]], keep: set[int]) -> dict[int, int]:
    """Column → its full width, for the columns kept whole (asked for, or of short values only)."""
    keep |= {i for i in range(len(headers)) if all(len(row[i]) <= _SHORT for row in cells)}
    return {i: max([len(headers[i]), *(len(row[i]) for row in cells)]) for i in sorted(keep)}


def _rendered(grid: Table, *, width: int, colour: bool) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        force_terminal=colour,
        no_color=not colour,
        color_system="standard" if colour else None,
        highlight=False,
    )
    console.print(grid)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())


def json_value(value: Any) -> str:
    """A nested value as compact JSON (never a Python repr); a plain string as it is."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def money(amount: float | None, currency: str | None = "USD") -> str:
    if amount is None:
        return "-"
    symbol = "$" if (currency or "USD") == "USD" else f"{currency} "
    return f"{symbol}{amount:,.4f}".rstrip("0").rstrip(".") if amount else f"{symbol}0"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"
