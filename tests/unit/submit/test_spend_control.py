"""Spend control in the submit path: a job's estimate is reserved before fal hears of it; a job
that does not fit, or whose account fal has locked, is HELD and its message consumed; a job fal
refuses gives its reservation back."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from falflow.fal.errors import FalAccountLockedError, FalValidationError
from falflow.jobs import JobCost, JobState
from falflow.spend.caps import BudgetConfig, Caps
from falflow.spend.gate import SpendAnnouncer, SpendGate
from falflow.submit.service import SubmitOutcome
from tests.fakes.spend_ledger import MemorySpendLedger
from tests.unit.submit.conftest import Harness, message

MODEL = "fal-ai/flux/dev"
DAY = "daily#2026-09-01#all"


class FixedEstimator:
    def __init__(self, per_image: float | None) -> None:
        self.per_image = per_image

    def estimate(self, model: str, fal_input: Mapping[str, Any] | None) -> JobCost | None:
        if self.per_image is None:
            return None
        images = float((fal_input or {}).get("num_images", 1))
        return JobCost(amount=self.per_image * images, source="estimate", unit="image", units=images)


class Events:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        self.sent.append((detail_type, dict(detail)))


@pytest.fixture
def budgeted() -> tuple[Harness, MemorySpendLedger, Events]:
    harness = Harness(estimator=FixedEstimator(0.025))
    ledger = MemorySpendLedger(harness.store, BudgetConfig(stack=Caps(daily_usd=0.10)))
    events = Events()
    harness.gate = SpendGate(ledger=ledger, store=harness.store, announcer=SpendAnnouncer(ledger, events))
    return harness, ledger, events


def job_message(n: int, **extra: Any) -> dict[str, Any]:
    return {"job_id": f"job-{n}", "model": MODEL, "input": {"prompt": f"p{n}", "num_images": 2}, **extra}


def test_jobs_within_the_cap_are_sent_and_the_next_one_is_held(
    budgeted: tuple[Harness, MemorySpendLedger, Events],
) -> None:
    harness, ledger, events = budgeted
    service = harness.service
    outcomes = [service.submit_job(message(job_message(n), f"m-{n}")).outcome for n in range(3)]

    assert outcomes == [SubmitOutcome.SUBMITTED, SubmitOutcome.SUBMITTED, SubmitOutcome.HELD]
    assert len(harness.fal.submitted) == 2
    assert ledger.spent(DAY) == Decimal("0.100")
    held = harness.job("job-2")
    assert held.state is JobState.HELD
    assert held.hold is not None
    assert held.hold.reason == "budget"
    assert held.hold.cap == "daily#all"
    assert held.hold.resets_at == "2026-09-02T00:00:00.000+00:00"
    assert "does not fit in what is left of the daily cap of $0.1" in held.hold.message
    assert held.estimate is not None
    assert held.estimate.amount == 0.05
    assert held.reservation is None
    assert held.submit_lease_until is None
    sent = harness.job("job-0")
    assert sent.reservation is not None
    assert sent.reservation.counters == [DAY]
    assert [t for t, _ in events.sent] == [
        "Budget Threshold Reached",
        "Budget Threshold Reached",
        "Budget Threshold Reached",
        "Budget Threshold Reached",
        "Job Held",
    ]


def test_a_held_jobs_message_again_sends_nothing(budgeted: tuple[Harness, MemorySpendLedger, Events]) -> None:
    harness, ledger, _ = budgeted
    ledger.budget = BudgetConfig(stack=Caps(daily_usd=0.01))
    assert harness.service.submit_job(message(job_message(1))).outcome is SubmitOutcome.HELD
    assert harness.service.submit_job(message(job_message(1))).outcome is SubmitOutcome.DUPLICATE
    assert harness.fal.submitted == []


def test_without_a_cap_the_job_is_sent_with_its_estimate_and_nothing_is_reserved(
    budgeted: tuple[Harness, MemorySpendLedger, Events],
) -> None:
    harness, ledger, _ = budgeted
    ledger.budget = BudgetConfig()
    assert harness.service.submit_job(message(job_message(1))).outcome is SubmitOutcome.SUBMITTED
    job = harness.job("job-1")
    assert job.estimate is not None
    assert job.estimate.amount == 0.05
    assert job.reservation is None
    assert harness.store.counters == {}


def test_a_model_cap_applies_to_its_model_only(budgeted: tuple[Harness, MemorySpendLedger, Events]) -> None:
    harness, ledger, _ = budgeted
    ledger.budget = BudgetConfig(models={MODEL: Caps(monthly_usd=0.04)})
    other = {"job_id": "other", "model": "fal-ai/other", "input": {"prompt": "x"}}
    assert harness.service.submit_job(message(other, "m-o")).outcome is SubmitOutcome.SUBMITTED
    assert harness.service.submit_job(message(job_message(1))).outcome is SubmitOutcome.HELD
    held = harness.job("job-1")
    assert held.hold is not None
    assert held.hold.cap == f"monthly#model:{MODEL}"
    assert held.hold.resets_at == "2026-10-01T00:00:00.000+00:00"


def test_an_unpriced_job_is_held_or_sent_as_configured(
    budgeted: tuple[Harness, MemorySpendLedger, Events],
) -> None:
    harness, ledger, _ = budgeted
    harness.estimator = FixedEstimator(None)
    ledger.budget = BudgetConfig(stack=Caps(daily_usd=1.0), unpriced="hold")
    assert harness.service.submit_job(message(job_message(1), "m-1")).outcome is SubmitOutcome.HELD
    held = harness.job("job-1")
    assert held.hold is not None
    assert held.hold.reason == "unpriced"

    ledger.budget = BudgetConfig(stack=Caps(daily_usd=1.0), unpriced="allow")
    assert harness.service.submit_job(message(job_message(2), "m-2")).outcome is SubmitOutcome.SUBMITTED
    sent = harness.job("job-2")
    assert sent.reservation is None
    assert [entry.action for entry in sent.trail] == ["unpriced"]


def test_fal_s_account_lock_holds_the_job_and_keeps_its_reservation(
    budgeted: tuple[Harness, MemorySpendLedger, Events],
) -> None:
    harness, ledger, _ = budgeted
    harness.fal.replies.append(FalAccountLockedError("locked", lock_reason="Exhausted balance.", status=403))
    assert harness.service.submit_job(message(job_message(1))).outcome is SubmitOutcome.HELD
    held = harness.job("job-1")
    assert held.state is JobState.HELD
    assert held.hold is not None
    assert held.hold.reason == "fal_account_locked"
    assert "Exhausted balance." in held.hold.message
    assert held.reservation is not None  # admitted before fal refused it: kept for its release
    assert ledger.spent(DAY) == Decimal("0.05")
    lock = ledger.lock()
    assert lock is not None
    assert lock.reason == "Exhausted balance."


def test_a_job_fal_refuses_gives_its_reservation_back(
    budgeted: tuple[Harness, MemorySpendLedger, Events],
) -> None:
    harness, ledger, _ = budgeted
    harness.fal.replies.append(FalValidationError("bad input", status=422, detail=[{"msg": "no"}]))
    assert harness.service.submit_job(message(job_message(1))).outcome is SubmitOutcome.FAILED
    failed = harness.job("job-1")
    assert failed.reservation is not None
    assert failed.reservation.settled_amount == 0.0
    assert ledger.spent(DAY) == Decimal("0.000")
