"""The emulated account's credit balance and lock (docs/fal-contract.md §5, §6).

Each billed request is charged when it completes, at its billing event's ``cost_total``. When the
balance drops below the lock threshold fal locks the account ("Exhausted balance") and refuses its
billable calls; a top-up lifts that lock, not an admin lock, which only an unlock lifts.
"""

from __future__ import annotations

from pydantic import BaseModel

EXHAUSTED_BALANCE = "Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
ADMIN_LOCK = "Admin lock. Please contact support@fal.ai"


class AccountView(BaseModel):
    """The account as ``GET /_emulator/account`` shows it."""

    balance_usd: float
    lock_threshold_usd: float
    locked: bool
    lock_reason: str | None


class Account:
    def __init__(self, starting_balance_usd: float, lock_threshold_usd: float) -> None:
        self._starting_balance_usd = starting_balance_usd
        self.lock_threshold_usd = lock_threshold_usd
        self.reset()

    def reset(self) -> None:
        """Back to the configured balance, unlocked unless that balance is already below the threshold."""
        self.balance_usd = self._starting_balance_usd
        self.lock_reason: str | None = None
        self._lock_if_exhausted()

    def charge(self, amount_usd: float) -> None:
        self.balance_usd = round(self.balance_usd - amount_usd, 9)
        self._lock_if_exhausted()

    def set_balance(self, balance_usd: float) -> None:
        """A top-up (or a correction): a balance no longer below the threshold lifts an exhausted lock."""
        self.balance_usd = balance_usd
        if self.lock_reason == EXHAUSTED_BALANCE and not self._exhausted:
            self.lock_reason = None
        self._lock_if_exhausted()

    def lock(self, reason: str = ADMIN_LOCK) -> None:
        self.lock_reason = reason

    def unlock(self) -> None:
        """Lift any lock; a balance still below the threshold locks again at the next charge."""
        self.lock_reason = None

    def view(self) -> AccountView:
        return AccountView(
            balance_usd=self.balance_usd,
            lock_threshold_usd=self.lock_threshold_usd,
            locked=self.lock_reason is not None,
            lock_reason=self.lock_reason,
        )

    @property
    def _exhausted(self) -> bool:
        return self.balance_usd < self.lock_threshold_usd

    def _lock_if_exhausted(self) -> None:
        if self.lock_reason is None and self._exhausted:
            self.lock_reason = EXHAUSTED_BALANCE
