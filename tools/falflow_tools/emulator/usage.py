"""Usage, billing and analytics arithmetic over the jobs the emulator actually ran.

Time windows follow the Platform API: ``start``/``end`` (date or datetime, ``end`` exclusive,
default the last 24 h), ``timezone`` for bucketing, ``timeframe`` picked from the span when
omitted (<2 h minute, <2 d hour, <64 d day, <183 d week, else month) and ``bound_to_timeframe``
snapping the window to bucket edges. Costs: ``cost_total = quantity * unit_price * (1 - discount)``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Timeframe = Literal["minute", "hour", "day", "week", "month"]
TIMEFRAMES: dict[str, Timeframe] = {frame: frame for frame in get_args(Timeframe)}
_STEPS: dict[Timeframe, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}
_AUTO_TIMEFRAME: tuple[tuple[timedelta, Timeframe], ...] = (
    (timedelta(hours=2), "minute"),
    (timedelta(days=2), "hour"),
    (timedelta(days=64), "day"),
    (timedelta(days=183), "week"),
)


class BadParameter(ValueError):
    """A query parameter the Platform API would reject with 400 validation_error."""


def _parse_instant(value: str, tz: ZoneInfo, name: str) -> datetime:
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=tz)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadParameter(f"{name} must be an ISO8601 date or datetime") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def _floor(moment: datetime, timeframe: Timeframe) -> datetime:
    moment = moment.replace(second=0, microsecond=0)
    if timeframe == "minute":
        return moment
    moment = moment.replace(minute=0)
    if timeframe == "hour":
        return moment
    moment = moment.replace(hour=0)
    if timeframe == "day":
        return moment
    if timeframe == "week":  # ISO weeks start on Monday
        return moment - timedelta(days=moment.weekday())
    return moment.replace(day=1)


def _next_edge(edge: datetime, timeframe: Timeframe) -> datetime:
    if timeframe == "month":
        return edge.replace(year=edge.year + edge.month // 12, month=edge.month % 12 + 1)
    return edge + _STEPS[timeframe]


@dataclass(frozen=True)
class TimeWindow:
    start: datetime
    end: datetime
    timeframe: Timeframe
    tz: ZoneInfo

    @classmethod
    def from_query(
        cls,
        start: str | None,
        end: str | None,
        *,
        timezone: str | None = None,
        timeframe: str | None = None,
        bound_to_timeframe: str | None = None,
        now: datetime | None = None,
    ) -> TimeWindow:
        try:
            tz = ZoneInfo(timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise BadParameter(f"unknown timezone {timezone!r}") from exc
        now = (now or datetime.now(UTC)).astimezone(tz)
        end_at = _parse_instant(end, tz, "end").astimezone(tz) if end else now
        start_at = _parse_instant(start, tz, "start").astimezone(tz) if start else end_at - timedelta(days=1)
        if start_at >= end_at:
            raise BadParameter("start must be before end")
        if timeframe is None:
            span = end_at - start_at
            chosen: Timeframe = next((frame for limit, frame in _AUTO_TIMEFRAME if span < limit), "month")
        elif timeframe in TIMEFRAMES:
            chosen = TIMEFRAMES[timeframe]
        else:
            raise BadParameter(f"timeframe must be one of {', '.join(TIMEFRAMES)}")
        if bound_to_timeframe not in (None, "true", "false"):
            raise BadParameter("bound_to_timeframe must be true or false")
        if bound_to_timeframe != "false":
            start_at = _floor(start_at, chosen)
            end_floor = _floor(end_at, chosen)
            end_at = end_at if end_floor == end_at else _next_edge(end_floor, chosen)
        return cls(start=start_at, end=end_at, timeframe=chosen, tz=tz)

    def contains(self, timestamp: float) -> bool:
        return self.start.timestamp() <= timestamp < self.end.timestamp()

    def bucket(self, timestamp: float) -> str:
        """The ISO8601 (with offset) start of the bucket holding ``timestamp``."""
        return _floor(datetime.fromtimestamp(timestamp, self.tz), self.timeframe).isoformat()


# ------------------------------------------------------------------------------ money


def costs(quantity: float, unit_price: float, percent_discount: float | None) -> dict[str, float]:
    """The cost fields of a usage line or billing event, rounded to the nano-dollar."""
    subtotal = quantity * unit_price
    discount = subtotal * (percent_discount or 0.0) / 100
    total = subtotal - discount
    return {
        "cost_subtotal": round(subtotal, 9),
        "cost_discount": round(discount, 9),
        "cost_total": round(total, 9),
    }


# ------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], percent: float) -> float:
    """Linear-interpolation percentile of ``values`` (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * percent / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ------------------------------------------------------------------------------ paging


def encode_cursor(page: int) -> str:
    return base64.b64encode(str(page).encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 1
    try:
        page = int(base64.b64decode(cursor, validate=True).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadParameter("invalid cursor") from exc
    if page < 1:
        raise BadParameter("invalid cursor")
    return page


def parse_limit(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    try:
        limit = int(value)
    except ValueError as exc:
        raise BadParameter("limit must be an integer") from exc
    if not 1 <= limit <= maximum:
        raise BadParameter(f"limit must be between 1 and {maximum}")
    return limit


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None

    @property
    def fields(self) -> dict[str, Any]:
        return {"next_cursor": self.next_cursor, "has_more": self.next_cursor is not None}


def paginate(items: Sequence[Any], limit: int, cursor: str | None) -> Page:
    page = decode_cursor(cursor)
    start = (page - 1) * limit
    more = start + limit < len(items)
    return Page(
        items=list(items[start : start + limit]), next_cursor=encode_cursor(page + 1) if more else None
    )
