"""Held jobs go back to the submit path on their own: `Releaser.run` (each reconcile run) takes HELD
jobs oldest first and releases each one that fits now.

- Held for a budget: its estimate is reserved against the caps in force, in one transaction with
  HELD → ACCEPTED (`JobStore.release_held`), so a release can never overcommit a cap either; a cap
  found full stops the release of every later job that needs it in this run.
- Held because fal locked the account: nothing is released while the lock lasts except one probe,
  the oldest such job, once per probe interval. When the probe reaches fal, the lock is cleared and
  every held job is released (each re-checked against the caps).
- Released by hand (`falflow jobs release`): the caps are not checked, but the estimate is still
  charged, so the counters stay the sum of what the jobs record.

A released job is ACCEPTED with no lease, and its intake message (`original_request`) is sent;
should that send be lost, the reconciler re-drives the ACCEPTED job as it does any other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Protocol

from aws_lambda_powertools import Logger

from falflow.jobs import (
    ChargeOutcome,
    CounterCharge,
    Job,
    JobState,
    JobStore,
    TrailEntry,
    isoformat,
)
from falflow.jobs.intake import original_request
from falflow.spend.caps import BudgetConfig, Cap
from falflow.spend.gate import ACTOR, SpendAnnouncer, cap_of, reservation_for
from falflow.spend.ledger import AccountLock, SpendLedger

logger = Logger(child=True)

RELEASE_ACTION: Final = "released"


class IntakeQueue(Protocol):
    def send(self, body: str) -> None: ...


class Release(StrEnum):
    RELEASED = "released"
    STILL_HELD = "still_held"  # does not fit yet, or waits for fal's lock
    PROBE = "probe"  # released to find out whether fal's lock has lifted
    CANNOT = "cannot_rebuild"  # its request cannot be rebuilt for the intake queue: by hand only
    GONE = "gone"  # left HELD meanwhile (released by another run, or ended)


@dataclass
class ReleaseReport:
    outcomes: Counter[Release] = field(default_factory=Counter)
    lock_cleared: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"lock_cleared": self.lock_cleared, **{o.value: n for o, n in sorted(self.outcomes.items())}}


class Releaser:
    def __init__(
        self,
        *,
        store: JobStore,
        ledger: SpendLedger,
        announcer: SpendAnnouncer,
        intake: IntakeQueue,
        lock_probe_seconds: float,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._announcer = announcer
        self._intake = intake
        self._lock_probe_seconds = lock_probe_seconds

    def run(self, now: datetime, *, time_left: Callable[[], float] | None = None) -> ReleaseReport:
        report = ReleaseReport()
        lock = self._ledger.lock()
        if lock is not None and self._probe_went_through(lock):
            report.lock_cleared = self._ledger.clear_lock(lock)
            lock = None if report.lock_cleared else lock
        held = self._store.list_by_state(JobState.HELD)
        if lock is not None:
            report.outcomes.update(self._probe(lock, held, now))
            return report
        config = self._ledger.config()
        full: set[str] = set()
        for job in held:
            if time_left is not None and time_left() <= 0:
                break
            report.outcomes[self._release_fitting(job, config, full, now)] += 1
        if report.outcomes:
            logger.info("release run done", extra=report.as_dict())
        return report

    def release(self, job: Job, now: datetime, *, why: str) -> Release:
        """Release `job` by hand: no cap is checked, its estimate is charged all the same."""
        caps = self._caps(job, self._ledger.config())
        outcome = self._release(job, caps, now, why=why, within_caps=False)
        assert isinstance(outcome, Release)  # nothing is full without a ceiling
        return outcome

    # -------------------------------------------------------------------------------- budgets

    def _caps(self, job: Job, config: BudgetConfig) -> list[Cap]:
        if job.reservation is not None or job.estimate is None:
            return []  # reserved already (held by fal's lock after it was admitted), or unpriced
        return config.caps_for(model=job.model, route=job.route, batch=job.batch)

    def _release_fitting(self, job: Job, config: BudgetConfig, full: set[str], now: datetime) -> Release:
        if job.hold is not None and job.hold.reason == "unpriced" and config.unpriced == "hold":
            return Release.STILL_HELD  # until a person releases it or the policy changes
        caps = self._caps(job, config)
        if any(cap.name in full for cap in caps):
            return Release.STILL_HELD
        outcome = self._release(job, caps, now, why="fits within its budgets now", within_caps=True)
        if isinstance(outcome, CounterCharge):
            full.add(cap_of(caps, outcome, now).name)
            return Release.STILL_HELD
        return outcome

    def _release(
        self, job: Job, caps: list[Cap], now: datetime, *, why: str, within_caps: bool
    ) -> Release | CounterCharge:
        body = original_request(job)
        if body is None:
            self._note(job, now, "cannot_release", "its request cannot be rebuilt for the intake queue")
            return Release.CANNOT
        outcome = self._move(job, caps, now, within_caps=within_caps)
        if outcome.full is not None:
            return outcome.full
        if not outcome.written:
            return Release.GONE
        self._intake.send(body)
        self._note(job, now, RELEASE_ACTION, why)
        self._announcer.released(job, why)
        if caps and job.estimate is not None:
            self._announcer.charged(caps, now)
        return Release.RELEASED

    def _move(self, job: Job, caps: list[Cap], now: datetime, *, within_caps: bool) -> ChargeOutcome:
        if not caps or job.estimate is None:
            return self._store.release_held(job.job_id, now=now)
        reservation, charges = reservation_for(
            caps, job.estimate.amount, self._ledger.table, now, within_caps=within_caps
        )
        return self._store.release_held(job.job_id, now=now, reservation=reservation, charges=charges)

    # ---------------------------------------------------------------------------- fal's lock

    def _probe_went_through(self, lock: AccountLock) -> bool:
        if lock.probe_job_id is None:
            return False
        probe = self._store.get(lock.probe_job_id)
        return probe is not None and probe.request_id is not None

    def _probe(self, lock: AccountLock, held: Iterable[Job], now: datetime) -> Counter[Release]:
        """While fal's lock lasts: once per interval, the oldest held job goes to fal to probe it."""
        outcomes: Counter[Release] = Counter()
        if lock.probe_at > isoformat(now):
            return outcomes
        for job in held:
            if not lock_held(job):
                continue
            probe_at = now + timedelta(seconds=self._lock_probe_seconds)
            if not self._ledger.set_probe(lock, job_id=job.job_id, probe_at=probe_at):
                return outcomes  # another run probes
            outcome = self._release(
                job, [], now, why=f"probes fal's account lock ({lock.reason})", within_caps=True
            )
            outcomes[Release.PROBE if outcome is Release.RELEASED else Release.GONE] += 1
            return outcomes
        # No job is held by the lock any more (released by hand, or ended): nothing to probe with.
        self._ledger.clear_lock(lock)
        return outcomes

    def _note(self, job: Job, now: datetime, action: str, reason: str) -> None:
        self._store.add_trail(
            job.job_id, TrailEntry(at=isoformat(now), actor=ACTOR, action=action, reason=reason)
        )


def lock_held(job: Job) -> bool:
    return job.hold is not None and job.hold.reason == "fal_account_locked"
