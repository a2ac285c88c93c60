"""Budgets as an operator sees them: every cap in force with what its window has spent, and the
run-time configuration (`falflow budget set` / `reset`) that overrides the template's caps."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from falflow.jobs import JobState, isoformat, utcnow
from falflow.spend.caps import BudgetConfig, Caps, UnpricedPolicy, Window
from falflow.spend.ledger import AccountLock
from falflow_tools.ops.submit import routes
from falflow_tools.ops.target import OpsError, Target


@dataclass(frozen=True)
class CapLine:
    cap: str  # daily#all, monthly#route:upscale/, daily#model:fal-ai/flux/dev
    limit_usd: float
    window: str  # 2026-12-02, 2026-12
    spent_usd: float
    resets_at: str

    @property
    def left_usd(self) -> float:
        return max(self.limit_usd - self.spent_usd, 0.0)

    @property
    def used_percent(self) -> float:
        return self.spent_usd / self.limit_usd * 100

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "left_usd": self.left_usd, "used_percent": round(self.used_percent, 2)}


@dataclass(frozen=True)
class BudgetStatus:
    config: BudgetConfig
    stored: bool  # the run-time configuration is in force, not the template's caps
    caps: list[CapLine]
    held: dict[str, int]  # HELD jobs by hold reason
    lock: AccountLock | None

    def to_json(self) -> dict[str, Any]:
        return {
            "in_force": "runtime" if self.stored else "template",
            "updated_at": self.config.updated_at,
            "unpriced": self.config.unpriced,
            "caps": [line.to_json() for line in self.caps],
            "held": self.held,
            "fal_account_lock": self.lock.__dict__ if self.lock else None,
        }


def budget_status(target: Target, now: datetime | None = None) -> BudgetStatus:
    now = now or utcnow()
    ledger = target.spend_ledger()
    stored = ledger.stored_config()
    config = stored or ledger.defaults
    caps = config.all_caps()
    spent = ledger.spent([cap.counter_key(now) for cap in caps])
    lines = []
    for cap in caps:
        window = Window.containing(cap.period, now)
        lines.append(
            CapLine(
                cap=cap.name,
                limit_usd=cap.limit_usd,
                window=window.id,
                spent_usd=float(spent[cap.counter_key(now)]),
                resets_at=isoformat(window.resets_at),
            )
        )
    held = Counter(
        job.hold.reason if job.hold else "unknown" for job in target.job_store().list_by_state(JobState.HELD)
    )
    return BudgetStatus(config, stored is not None, lines, dict(sorted(held.items())), ledger.lock())


@dataclass(frozen=True)
class BudgetChange:
    """What `falflow budget set` changes: None leaves a value as it is; a cap of 0 removes it."""

    daily_usd: float | None = None
    monthly_usd: float | None = None
    route: str | None = None
    model: str | None = None
    unpriced: UnpricedPolicy | None = None

    def applied_to(self, caps: Caps) -> Caps:
        return Caps(
            daily_usd=caps.daily_usd if self.daily_usd is None else self.daily_usd,
            monthly_usd=caps.monthly_usd if self.monthly_usd is None else self.monthly_usd,
        )


def set_budget(target: Target, change: BudgetChange) -> BudgetConfig:
    """The configuration in force (stored, else the template's caps) with `change`, stored."""
    ledger = target.spend_ledger()
    config = ledger.stored_config() or ledger.defaults
    # A cap on a prefix no job comes in under would never apply; one of a route since removed
    # can still be changed (to 0).
    known = list(dict.fromkeys([*routes(target).prefixes, *config.routes]))
    if change.route is not None and change.route not in known:
        raise OpsError(
            f"{target.name} has no route {change.route!r} (its routes: {', '.join(known) or 'none'})"
        )
    update: dict[str, Any] = {}
    if change.unpriced is not None:
        update["unpriced"] = change.unpriced
    if change.route is not None:
        update["routes"] = _scoped(config.routes, change.route, change)
    elif change.model is not None:
        update["models"] = _scoped(config.models, change.model, change)
    else:
        update["stack"] = change.applied_to(config.stack)
    return ledger.put_config(config.model_copy(update=update))


def _scoped(caps: dict[str, Caps], name: str, change: BudgetChange) -> dict[str, Caps]:
    """`caps` with `name`'s changed; a route or model left with no cap is dropped."""
    changed = change.applied_to(caps.get(name, Caps()))
    others = {key: value for key, value in caps.items() if key != name}
    return {**others, name: changed} if changed.daily_usd or changed.monthly_usd else others


def reset_budget(target: Target) -> None:
    """Back to the template's caps (its parameters and the route table)."""
    target.spend_ledger().reset_config()


def recheck_note(target: Target) -> str:
    """When held jobs are looked at again under the new caps."""
    if target.is_local:
        when = "the local stack runs it every few seconds; `falflow local run reconcile` runs it now"
    else:
        when = f"ReconcileSchedule {target.parameters.get('ReconcileSchedule', '')}".rstrip()
    return f"held jobs are re-checked against these caps by the next reconcile run ({when})"
