"""The spend settings of the functions that check or settle budgets (submit, reconcile, collect):
env SPEND_TABLE, DAILY_BUDGET_USD, MONTHLY_BUDGET_USD, UNPRICED_JOBS as template.yaml sets them,
and each route's ``daily_budget_usd`` / ``monthly_budget_usd`` in the route table (env ROUTES)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field

from falflow.aws.clients import aws_client
from falflow.aws.events import EventBridgePublisher
from falflow.jobs import JobStore
from falflow.settings import EventBusSettings
from falflow.spend.caps import BudgetConfig, Caps, UnpricedPolicy
from falflow.spend.gate import SpendAnnouncer, SpendGate
from falflow.spend.ledger import DynamoSpendLedger, SpendLedger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient


class RouteBudget(BaseModel):
    """A route of the route table (env ROUTES), as far as budgets read it."""

    model_config = ConfigDict(extra="ignore")

    daily_budget_usd: float = 0
    monthly_budget_usd: float = 0


class BudgetedRoute(Protocol):
    """A route as budgets read it: `RouteBudget`, or the submit function's whole `Route`."""

    @property
    def daily_budget_usd(self) -> float: ...
    @property
    def monthly_budget_usd(self) -> float: ...


def route_caps(routes: Mapping[str, BudgetedRoute]) -> dict[str, Caps]:
    """Each route's own caps, where it sets any: deploy-time defaults of the budgets."""
    return {
        prefix: Caps(daily_usd=route.daily_budget_usd, monthly_usd=route.monthly_budget_usd)
        for prefix, route in routes.items()
        if route.daily_budget_usd or route.monthly_budget_usd
    }


class SpendSettings(EventBusSettings):
    # Empty: no budgets (each job still gets its estimate).
    spend_table: str = ""
    daily_budget_usd: Annotated[float, Field(ge=0)] = 0
    monthly_budget_usd: Annotated[float, Field(ge=0)] = 0
    unpriced_jobs: UnpricedPolicy = "allow"
    # How long a container keeps the budget configuration before reading it again.
    budget_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 30
    # How long jobs wait after fal said the account is locked before one is sent to probe it.
    fal_lock_probe_seconds: Annotated[float, Field(gt=0, le=86400)] = 300

    def route_caps(self) -> dict[str, Caps]:
        """The route table's caps; a function that reads the route table says what they are."""
        return {}

    def budget_defaults(self) -> BudgetConfig:
        routes = self.route_caps()
        return BudgetConfig(
            stack=Caps(daily_usd=self.daily_budget_usd, monthly_usd=self.monthly_budget_usd),
            routes=routes,
            unpriced=self.unpriced_jobs,
        )

    # The clients default to the container's; the operator CLI passes its target's.
    def spend_ledger(self, dynamodb: DynamoDBClient | None = None) -> DynamoSpendLedger | None:
        if not self.spend_table:
            return None
        return DynamoSpendLedger(
            dynamodb or aws_client("dynamodb"),
            self.spend_table,
            defaults=self.budget_defaults(),
            config_ttl=timedelta(seconds=self.budget_cache_seconds),
        )

    def spend_announcer(self, ledger: SpendLedger, events: EventBridgeClient | None = None) -> SpendAnnouncer:
        return SpendAnnouncer(
            ledger, EventBridgePublisher(events or aws_client("events"), self.event_bus_name)
        )

    def spend_gate(self, store: JobStore) -> SpendGate | None:
        ledger = self.spend_ledger()
        if ledger is None:
            return None
        return SpendGate(
            ledger=ledger,
            store=store,
            announcer=self.spend_announcer(ledger),
            lock_probe=timedelta(seconds=self.fal_lock_probe_seconds),
        )


class RoutedSpendSettings(SpendSettings):
    """Spend settings that read the route table (env ROUTES) for its routes' caps alone: what a
    function that does not plan jobs (reconcile) and the operator CLI use."""

    routes: dict[str, RouteBudget] = Field(default_factory=dict)

    def route_caps(self) -> dict[str, Caps]:
        return route_caps(self.routes)
