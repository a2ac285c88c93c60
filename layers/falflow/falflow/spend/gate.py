"""The budget check before a job is sent, and the announcements that follow spend.

`SpendGate.admit` is called by the submit path under the job's submit lease, right before fal is
asked. A job no cap applies to goes on with its estimate on the record. Otherwise its estimate is
reserved against every cap that applies in one transaction with the job's record
(`JobStore.reserve_spend`), so concurrent submitters never commit more than a cap; a job that does
not fit is HELD with the cap and the time its window resets, and its message is consumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Protocol

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from falflow.jobs import (
    CounterCharge,
    Job,
    JobCost,
    JobHold,
    JobStore,
    SpendReservation,
    TrailEntry,
    isoformat,
)
from falflow.observability import emit_metric_record
from falflow.spend.caps import STACK_SCOPE, THRESHOLDS, BudgetConfig, Cap, Window, usd
from falflow.spend.ledger import SpendLedger

logger = Logger(child=True)

ACTOR: Final = "spend"
DEFAULT_LOCK_PROBE: Final = timedelta(minutes=5)


class SpendEvents(Protocol):
    """Where spend announcements go (falflow.aws.events.EventBridgePublisher)."""

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...


class Admission(StrEnum):
    ADMITTED = "admitted"  # go on and send it
    HELD = "held"  # recorded HELD: its message is done
    LOST = "lost"  # the job changed under us (another worker, or it ended): send nothing


@dataclass(frozen=True)
class Verdict:
    admission: Admission
    hold: JobHold | None = None


def reservation_for(
    caps: Sequence[Cap], amount: float, table: str, now: datetime, *, within_caps: bool = True
) -> tuple[SpendReservation, list[CounterCharge]]:
    """A reservation of `amount` and its charge to each cap's counter in the window holding `now`:
    within each cap's limit, or (a release by hand) whatever the counter holds."""
    charges = [
        CounterCharge(
            table=table,
            key=cap.counter_key(now),
            amount=usd(amount),
            ceiling=usd(cap.limit_usd) if within_caps else None,
        )
        for cap in caps
    ]
    reservation = SpendReservation(
        amount=amount, counters=[charge.key for charge in charges], reserved_at=isoformat(now)
    )
    return reservation, charges


def cap_of(caps: Sequence[Cap], charge: CounterCharge, now: datetime) -> Cap:
    """The cap whose counter `charge` (one of `reservation_for`'s) is."""
    return next(cap for cap in caps if cap.counter_key(now) == charge.key)


def settle(store: JobStore, job: Job, amount: float, table: str, now: datetime) -> bool:
    """Replace the job's reserved estimate by `amount` (its billed cost, or 0 when fal never ran
    it) in every counter it charged; False when there was nothing to settle (no reservation, or
    settled before)."""
    reservation = job.reservation
    if reservation is None or reservation.settled_at is not None:
        return False
    delta = usd(amount) - usd(reservation.amount)
    charges = [CounterCharge(table=table, key=key, amount=delta) for key in reservation.counters]
    return store.settle_reservation(job.job_id, amount=amount, charges=charges, now=now).written


def budget_hold(cap: Cap, amount: float, now: datetime) -> JobHold:
    resets_at = Window.containing(cap.period, now).resets_at
    too_large = amount > cap.limit_usd
    if cap.period == "batch":
        why = (
            f"its estimate ${amount:g} does not fit in what is left of {cap.describe()}; it waits "
            "until released by hand (falflow jobs release JOB) or cancelled with its batch"
        )
    elif too_large:
        why = f"its estimate ${amount:g} is larger than {cap.describe()}; it runs once the cap is raised"
    else:
        why = (
            f"its estimate ${amount:g} does not fit in what is left of {cap.describe()}; "
            f"it runs when the window resets at {isoformat(resets_at)} or the cap is raised"
        )
    return JobHold(
        reason="budget", message=why, held_at=isoformat(now), resets_at=isoformat(resets_at), cap=cap.name
    )


class SpendAnnouncer:
    """Events on EventBridge and metrics for spend: thresholds of caps, jobs held and released."""

    def __init__(self, ledger: SpendLedger, events: SpendEvents | None) -> None:
        self._ledger = ledger
        self._events = events

    def charged(self, caps: Sequence[Cap], now: datetime) -> None:
        """After a charge: each threshold a cap has reached is announced once per window (the mark
        is conditional, so concurrent submitters announce it once between them)."""
        if not caps:
            return
        keys = [cap.counter_key(now) for cap in caps]
        counters = self._ledger.counters(keys)
        for cap, key in zip(caps, keys, strict=True):
            after = counters[key].spent
            limit = usd(cap.limit_usd)
            percent = float(after / limit * 100)
            if cap.scope == STACK_SCOPE:
                emit_metric_record("BudgetUsed", MetricUnit.Percent, percent, cap=cap.name)
            for threshold in THRESHOLDS:
                reached = after >= limit * Decimal(threshold) / 100
                if (
                    reached
                    and threshold not in counters[key].alerted
                    and self._ledger.mark_alerted(key, threshold)
                ):
                    self._publish(
                        "Budget Threshold Reached",
                        {
                            "cap": cap.name,
                            "scope": cap.scope,
                            "period": cap.period,
                            "window": Window.containing(cap.period, now).id,
                            "threshold_percent": threshold,
                            "limit_usd": cap.limit_usd,
                            "spent_usd": float(after),
                        },
                    )

    def held(self, job: Job, hold: JobHold) -> None:
        self._publish("Job Held", {"job_id": job.job_id, "model": job.model, **hold.model_dump(mode="json")})

    def released(self, job: Job, why: str) -> None:
        emit_metric_record("JobsReleased", MetricUnit.Count, 1)
        self._publish("Job Released", {"job_id": job.job_id, "model": job.model, "reason": why})

    def _publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        if self._events is None:
            return
        try:
            self._events.publish(detail_type, detail)
        except Exception:  # an announcement is advice: a failure never holds a job back
            logger.exception("spend event not published", detail_type=detail_type)


class SpendGate:
    def __init__(
        self,
        *,
        ledger: SpendLedger,
        store: JobStore,
        announcer: SpendAnnouncer,
        lock_probe: timedelta = DEFAULT_LOCK_PROBE,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._announcer = announcer
        self._lock_probe = lock_probe

    def admit(self, job: Job, now: datetime) -> Verdict:
        """Reserve the job's estimate against its caps, or hold it; see the module docstring."""
        if job.reservation is not None:
            return Verdict(Admission.ADMITTED)  # reserved by an earlier attempt or by its release
        config = self._ledger.config()
        caps = config.caps_for(model=job.model, route=job.route, batch=job.batch)
        if not caps:
            return Verdict(Admission.ADMITTED)
        if job.estimate is None:
            return self._unpriced(job, config, now)
        return self._reserve(job, job.estimate, caps, now)

    def _unpriced(self, job: Job, config: BudgetConfig, now: datetime) -> Verdict:
        if config.unpriced == "hold":
            hold = JobHold(
                reason="unpriced",
                message=f"no price is known for {job.model}, and budgets hold unpriced jobs; it runs "
                "once a price is known (collect reads fal's prices) or by hand (falflow jobs release)",
                held_at=isoformat(now),
            )
            return self.hold(job, hold, now)
        self._store.add_trail(
            job.job_id,
            TrailEntry(
                at=isoformat(now),
                actor=ACTOR,
                action="unpriced",
                reason=f"no price is known for {job.model}: sent without a reservation against the budgets",
            ),
        )
        return Verdict(Admission.ADMITTED)

    def _reserve(self, job: Job, estimate: JobCost, caps: list[Cap], now: datetime) -> Verdict:
        assert job.submit_lease_until is not None
        reservation, charges = reservation_for(caps, estimate.amount, self._ledger.table, now)
        outcome = self._store.reserve_spend(job.job_id, reservation, charges, lease=job.submit_lease_until)
        if outcome.written:
            self._announcer.charged(caps, now)
            return Verdict(Admission.ADMITTED)
        if outcome.full is None:
            return Verdict(Admission.LOST)
        return self.hold(job, budget_hold(cap_of(caps, outcome.full, now), estimate.amount, now), now)

    def hold(self, job: Job, hold: JobHold, now: datetime) -> Verdict:
        """Record `job` (under this worker's submit lease) HELD with `hold`."""
        held = self._store.hold(job.job_id, hold, now=now, lease=job.submit_lease_until)
        if held is None:
            return Verdict(Admission.LOST)
        logger.warning(
            "job held", job_id=job.job_id, reason=hold.reason, cap=hold.cap, resets_at=hold.resets_at
        )
        self._announcer.held(held, hold)
        return Verdict(Admission.HELD, hold)

    def refund(self, job: Job, now: datetime) -> None:
        """Give back what a job reserved that fal never ran (refused, or rejected before sending)."""
        settle(self._store, job, 0.0, self._ledger.table, now)

    def hold_for_lock(self, job: Job, lock_reason: str, now: datetime) -> Verdict:
        """fal refused the submit because the account is locked: hold the job until the lock lifts."""
        probe_at = now + self._lock_probe
        self._ledger.record_lock(lock_reason, now=now, probe_at=probe_at)
        hold = JobHold(
            reason="fal_account_locked",
            message=f"fal refused the submit: the account is locked ({lock_reason}); "
            "held jobs are sent again, oldest first, once a probe job goes through",
            held_at=isoformat(now),
            resets_at=isoformat(probe_at),
        )
        return self.hold(job, hold, now)
