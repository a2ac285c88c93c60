"""Moments as operators write them: `30m`, `2h`, `7d` (ago) or an ISO date/time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def moment(value: str) -> datetime:
    """`30m`, `2h`, `7d` ago, or an ISO date/time (UTC unless it says otherwise); ValueError else."""
    found = _DURATION.match(value.strip())
    if found:
        return datetime.now(UTC) - timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r}: use e.g. 30m, 2h, 7d or 2026-01-31T12:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
