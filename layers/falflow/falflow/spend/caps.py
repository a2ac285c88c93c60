"""Budgets: caps in USD per UTC day and month, for the whole stack, a route or a model, and the
windows their spend is counted in.

The deploy-time caps (template parameters DailyBudgetUsd / MonthlyBudgetUsd; a route's
``daily_budget_usd`` / ``monthly_budget_usd``) are defaults; `BudgetConfig` kept in the spend table
(``falflow budget set``) overrides them at run time. A cap of 0 is no cap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import ConfigDict, Field

from falflow.deferred import DeferredModel
from falflow.jobs.batch import JobBatch

# A batch's budget (falflow.batches) is counted over the batch's whole life: one window.
Period = Literal["daily", "monthly", "batch"]
PERIODS: Final[tuple[Period, ...]] = ("daily", "monthly")
_BATCH_WINDOW_START: Final = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH_WINDOW_END: Final = datetime(9999, 12, 31, tzinfo=UTC)
UnpricedPolicy = Literal["allow", "hold"]
# The scope of a cap: every job, the jobs of one route (by prefix) or of one model.
STACK_SCOPE: Final = "all"
# Fractions of a cap at which a "Budget Threshold Reached" event is sent (once per window).
THRESHOLDS: Final = (50, 75, 90, 100)

Usd = Annotated[float, Field(ge=0)]


class Caps(DeferredModel):
    """A daily and a monthly cap in USD; 0 (or unset) is no cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily_usd: Usd = 0
    monthly_usd: Usd = 0

    def limit(self, period: Period) -> float:
        return {"daily": self.daily_usd, "monthly": self.monthly_usd}.get(period, 0.0)


class BudgetConfig(DeferredModel):
    """Every cap in force, and what happens to a job whose model has no price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: Caps = Field(default_factory=Caps)
    routes: dict[str, Caps] = Field(default_factory=dict)
    models: dict[str, Caps] = Field(default_factory=dict)
    unpriced: UnpricedPolicy = "allow"
    updated_at: str | None = None

    def caps_for(self, *, model: str | None, route: str | None, batch: JobBatch | None = None) -> list[Cap]:
        """The caps a job of `model` (dropped under `route`, a line of `batch`) is counted against:
        those set (> 0), and its batch's budget if the batch has one."""
        scoped: list[tuple[str, Caps]] = [(STACK_SCOPE, self.stack)]
        if route is not None and route in self.routes:
            scoped.append((f"route:{route}", self.routes[route]))
        if model is not None and model in self.models:
            scoped.append((f"model:{model}", self.models[model]))
        caps = _set_caps(scoped)
        if batch is not None and batch.budget_usd:
            caps.append(Cap(scope=f"batch:{batch.name}", period="batch", limit_usd=batch.budget_usd))
        return caps

    def all_caps(self) -> list[Cap]:
        """Every cap set (> 0): the stack's, then each route's and each model's."""
        return _set_caps(
            [
                (STACK_SCOPE, self.stack),
                *((f"route:{prefix}", caps) for prefix, caps in sorted(self.routes.items())),
                *((f"model:{model}", caps) for model, caps in sorted(self.models.items())),
            ]
        )


@dataclass(frozen=True)
class Window:
    """One UTC day or month: the span a cap's spend is counted over."""

    period: Period
    starts_at: datetime

    @classmethod
    def containing(cls, period: Period, moment: datetime) -> Window:
        if period == "batch":
            return cls(period, _BATCH_WINDOW_START)
        moment = moment.astimezone(UTC)
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "monthly":
            start = start.replace(day=1)
        return cls(period, start)

    @property
    def id(self) -> str:
        if self.period == "batch":
            return "all"
        return self.starts_at.strftime("%Y-%m-%d" if self.period == "daily" else "%Y-%m")

    @property
    def resets_at(self) -> datetime:
        if self.period == "batch":
            return _BATCH_WINDOW_END  # a batch's budget never resets
        if self.period == "daily":
            return self.starts_at + timedelta(days=1)
        year, month = divmod(self.starts_at.month, 12)
        return self.starts_at.replace(year=self.starts_at.year + year, month=month + 1)


@dataclass(frozen=True)
class Cap:
    scope: str
    period: Period
    limit_usd: float

    @property
    def name(self) -> str:
        """``daily#all``, ``monthly#model:fal-ai/flux/dev``: how holds and events name the cap."""
        return f"{self.period}#{self.scope}"

    def counter_key(self, moment: datetime) -> str:
        """The spend table key of this cap's counter in the window holding `moment`."""
        return counter_key(self.period, Window.containing(self.period, moment).id, self.scope)

    def describe(self) -> str:
        if self.period == "batch":
            return f"the budget of ${self.limit_usd:g} of {self.scope.replace(':', ' ', 1)}"
        where = "all jobs" if self.scope == STACK_SCOPE else self.scope.replace(":", " ", 1)
        return f"the {self.period} cap of ${self.limit_usd:g} ({where})"


def _set_caps(scoped: Iterable[tuple[str, Caps]]) -> list[Cap]:
    return [
        Cap(scope=scope, period=period, limit_usd=caps.limit(period))
        for scope, caps in scoped
        for period in PERIODS
        if caps.limit(period) > 0
    ]


def counter_key(period: Period, window_id: str, scope: str) -> str:
    return f"{period}#{window_id}#{scope}"


def usd(amount: float) -> Decimal:
    """Money as DynamoDB keeps it: exact decimals, never binary floats."""
    return Decimal(repr(amount))
