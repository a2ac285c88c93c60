"""A job's cost estimate before it is sent: the model's unit price times the units its input asks
for, or, where the input says nothing countable, fal's own estimate of a typical call.

Prices come from the usage table's PRICE rows (collect keeps them), else from fal's
``GET /v1/models/pricing``; fal's ``POST /v1/models/pricing/estimate`` (``historical_api_price``,
one call) answers for units the input does not count (megapixels, tokens, GPU seconds). Each answer
is remembered per container for ``cache_ttl``. None: the model has no price anywhere (unpriced).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol

from aws_lambda_powertools import Logger

from falflow.catalogue import PRICE_PK
from falflow.fal.errors import FalError
from falflow.fal.platform import CostEstimate, Price
from falflow.jobs import JobCost, utcnow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(child=True)

# Input fields that ask for a length of media, in seconds (the first one set wins).
DURATION_INPUT_FIELDS: Final = ("duration", "seconds_total", "duration_seconds", "seconds", "num_seconds")
# Units billed once per call.
PER_CALL_UNITS: Final = frozenset({"request", "call", "generation", "run"})
# Input fields that ask for several outputs of one call.
COUNT_INPUT_FIELDS: Final = ("num_images", "num_outputs", "num_videos", "num_samples")
DEFAULT_CACHE_TTL: Final = timedelta(minutes=10)


class PriceList(Protocol):
    """fal's pricing API as the estimator needs it (falflow.fal.platform.FalPlatformClient)."""

    def pricing(self, endpoint_ids: Sequence[str]) -> list[Price]: ...

    def estimate_cost(
        self,
        *,
        call_quantities: Mapping[str, int] | None = None,
        unit_quantities: Mapping[str, float] | None = None,
    ) -> CostEstimate: ...


def unit_kind(unit: str) -> str:
    """``images`` and ``Image`` are both ``image``."""
    kind = unit.strip().lower()
    return kind[:-1] if kind.endswith("s") else kind


def _positive_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number > 0 else None


def requested_seconds(fal_input: Mapping[str, Any] | None) -> float | None:
    """The media length an input asks for, in seconds; None when it names none."""
    for name in DURATION_INPUT_FIELDS:
        seconds = _positive_number((fal_input or {}).get(name))
        if seconds is not None:
            return seconds
    return None


def requested_count(fal_input: Mapping[str, Any] | None) -> float:
    """How many outputs one call asks for (1 when the input does not say)."""
    for name in COUNT_INPUT_FIELDS:
        count = _positive_number((fal_input or {}).get(name))
        if count is not None:
            return count
    return 1.0


def units_asked(fal_input: Mapping[str, Any] | None, unit: str) -> float | None:
    """How many of ``unit`` an input asks for before it runs; None when the input cannot tell."""
    kind = unit_kind(unit)
    if kind in ("image", "video", "audio"):
        return requested_count(fal_input)
    if kind == "second":
        return requested_seconds(fal_input)
    if kind in PER_CALL_UNITS:
        return 1.0
    return None


class Estimator(Protocol):
    def estimate(self, model: str, fal_input: Mapping[str, Any] | None) -> JobCost | None:
        """The job's estimate, or None when the model has no price (unpriced)."""
        ...


class CostEstimator:
    """`Estimator` from the prices collect keeps, else fal's pricing API."""

    def __init__(
        self,
        *,
        dynamodb: DynamoDBClient | None,
        usage_table: str,
        fal: PriceList | None,
        cache_ttl: timedelta = DEFAULT_CACHE_TTL,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._dynamodb = dynamodb
        self._table = usage_table
        self._fal = fal
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._prices: dict[str, tuple[datetime, Price | None]] = {}
        self._per_call: dict[str, tuple[datetime, float | None]] = {}
        self._lock = threading.Lock()

    def estimate(self, model: str, fal_input: Mapping[str, Any] | None) -> JobCost | None:
        price = self._price(model)
        if price is None:
            return None
        units = units_asked(fal_input, price.unit)
        if units is not None:
            amount = Decimal(repr(price.unit_price)) * Decimal(repr(units))
            return JobCost(
                amount=float(amount),
                currency=price.currency,
                source="estimate",
                unit=price.unit,
                units=units,
                unit_price=price.unit_price,
            )
        per_call = self._typical_call(model)
        if per_call is None:
            return None
        return JobCost(amount=per_call, currency=price.currency, source="estimate", unit="request", units=1.0)

    def _fresh[T](self, cache: dict[str, tuple[datetime, T]], model: str) -> tuple[bool, T | None]:
        with self._lock:
            hit = cache.get(model)
        if hit is not None and self._clock() - hit[0] < self._cache_ttl:
            return True, hit[1]
        return False, None

    def _price(self, model: str) -> Price | None:
        found, price = self._fresh(self._prices, model)
        if found:
            return price
        price = self._stored_price(model) or self._fal_price(model)
        with self._lock:
            self._prices[model] = (self._clock(), price)
        return price

    def _stored_price(self, model: str) -> Price | None:
        if self._dynamodb is None or not self._table:
            return None
        item = self._dynamodb.get_item(
            TableName=self._table, Key={"pk": {"S": PRICE_PK}, "sk": {"S": model}}
        ).get("Item")
        if not item or "unit_price" not in item or "unit" not in item:
            return None
        return Price(
            endpoint_id=model,
            unit_price=float(item["unit_price"]["N"]),
            unit=item["unit"]["S"],
            currency=item.get("currency", {}).get("S", "USD"),
        )

    def _fal_price(self, model: str) -> Price | None:
        if self._fal is None:
            return None
        try:
            prices = self._fal.pricing([model])
        except FalError as error:  # the estimate waits for the next container or cache expiry
            logger.warning("fal's pricing could not be read", model=model, error=error.message)
            return None
        return next((price for price in prices if price.endpoint_id == model), None)

    def _typical_call(self, model: str) -> float | None:
        found, amount = self._fresh(self._per_call, model)
        if found:
            return amount
        amount = None
        if self._fal is not None:
            try:
                amount = self._fal.estimate_cost(call_quantities={model: 1}).total_cost
            except FalError as error:
                logger.warning("fal's cost estimate could not be read", model=model, error=error.message)
        with self._lock:
            self._per_call[model] = (self._clock(), amount)
        return amount
