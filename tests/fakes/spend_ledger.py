"""An in-memory `SpendLedger` over the counters `InMemoryJobStore` charges, for unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from falflow.jobs import isoformat
from falflow.spend.caps import BudgetConfig
from falflow.spend.ledger import AccountLock, SpendCounter
from tests.fakes.job_store import InMemoryJobStore


@dataclass
class MemorySpendLedger:
    store: InMemoryJobStore
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    table: str = "spend"
    alerted: dict[str, set[int]] = field(default_factory=dict)
    account_lock: AccountLock | None = None

    def config(self) -> BudgetConfig:
        return self.budget

    def spent(self, key: str) -> Decimal:
        return self.store.counters.get((self.table, key), Decimal(0))

    def counters(self, keys: Sequence[str]) -> dict[str, SpendCounter]:
        return {key: SpendCounter(self.spent(key), frozenset(self.alerted.get(key, ()))) for key in keys}

    def mark_alerted(self, key: str, threshold: int) -> bool:
        marks = self.alerted.setdefault(key, set())
        if threshold in marks:
            return False
        marks.add(threshold)
        return True

    def lock(self) -> AccountLock | None:
        return self.account_lock

    def record_lock(self, reason: str, *, now: datetime, probe_at: datetime) -> None:
        if self.account_lock is None:
            self.account_lock = AccountLock(reason=reason, since=isoformat(now), probe_at=isoformat(probe_at))

    def set_probe(self, lock: AccountLock, *, job_id: str, probe_at: datetime) -> bool:
        if self.account_lock != lock:
            return False
        self.account_lock = replace(lock, probe_at=isoformat(probe_at), probe_job_id=job_id)
        return True

    def clear_lock(self, lock: AccountLock) -> bool:
        if self.account_lock != lock:
            return False
        self.account_lock = None
        return True
