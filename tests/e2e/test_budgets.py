"""Spend control on the local stack: a daily cap holds the jobs that do not fit, raising it releases
them in one reconcile run, and fal's account lock holds jobs until a probe goes through."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from falflow.jobs import Job, JobState, utcnow
from falflow.spend.caps import BudgetConfig, Caps, Window
from falflow.spend.ledger import DynamoSpendLedger
from falflow.webhook.token import JOB_ID_PARAMETER
from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.submit import job_message, send_message
from falflow_tools.ops.target import Target

pytestmark = pytest.mark.e2e

MODEL = "fal-ai/flux/dev"  # $0.025 per image in the emulator's price list
PER_JOB = 0.05  # two images


@pytest.fixture
def ledger(target: Target) -> Iterator[DynamoSpendLedger]:
    """The stack's spend table; the template's caps (none) are back in force afterwards."""
    ledger = DynamoSpendLedger(
        target.dynamodb(), target.output("SpendTableName"), defaults=BudgetConfig(), config_ttl=0
    )
    yield ledger
    ledger.reset_config()


def _send(target: Target, tag: str, n: int) -> list[str]:
    return [
        send_message(
            target, job_message(MODEL, {"prompt": f"{tag} {i}", "num_images": 2}, job_id=f"{tag}-{i:03d}")
        ).job_id
        for i in range(n)
    ]


def _settled(target: Target, job_ids: list[str], states: set[JobState], timeout_s: float) -> list[Job]:
    """Every job once each is in one of `states` (it may pass through others on the way)."""
    store = target.job_store()
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [store.get(job_id) for job_id in job_ids]
        if all(job is not None and job.state in states for job in jobs):
            return [job for job in jobs if job is not None]
        if time.monotonic() > deadline:
            seen = Counter(job.state.value if job else "missing" for job in jobs)
            raise AssertionError(f"jobs not in {sorted(states)} within {timeout_s}s: {dict(seen)}")
        time.sleep(0.2)


def _fal_requests_per_job(stack: LocalStack, job_ids: list[str]) -> Counter[str]:
    assert stack.emulator is not None
    wanted = set(job_ids)
    sent: Counter[str] = Counter()
    for view in stack.emulator.control.jobs():
        job_id = parse_qs(urlsplit(view.webhook_url or "").query).get(JOB_ID_PARAMETER, [""])[0]
        if job_id in wanted:
            sent[job_id] += 1
    return sent


def test_a_daily_cap_holds_what_does_not_fit_and_raising_it_releases_every_held_job(
    stack: LocalStack, target: Target, ledger: DynamoSpendLedger
) -> None:
    day = Window.containing("daily", utcnow())
    key = f"daily#{day.id}#all"
    already = ledger.spent([key])[key]  # earlier tests of the package ran without a cap
    ledger.put_config(BudgetConfig(stack=Caps(daily_usd=float(already) + 1.0)))
    tag = f"budget-{uuid.uuid4().hex[:6]}"

    job_ids = _send(target, tag, 100)
    jobs = _settled(target, job_ids, {JobState.HELD, JobState.COMPLETED}, timeout_s=180)

    by_state = Counter(job.state for job in jobs)
    assert by_state == {JobState.COMPLETED: 20, JobState.HELD: 80}
    # Ten submissions of a batch run at once; the cap was never overcommitted.
    assert ledger.spent([key])[key] - already == Decimal("1.00")
    for job in jobs:
        if job.state is JobState.HELD:
            assert job.hold is not None
            assert job.hold.reason == "budget"
            assert job.hold.cap == "daily#all"
            assert job.hold.resets_at == day.resets_at.isoformat(timespec="milliseconds")
            assert job.estimate is not None
            assert job.estimate.amount == PER_JOB
    assert sum(_fal_requests_per_job(stack, job_ids).values()) == 20

    ledger.put_config(BudgetConfig(stack=Caps(daily_usd=float(already) + 5.0)))
    run = stack.run_schedule("ReconcileFunction")
    assert run.ok, run.error
    assert run.payload["held_released"] == 80

    done = _settled(target, job_ids, {JobState.COMPLETED}, timeout_s=240)
    assert len(done) == 100
    assert ledger.spent([key])[key] - already == Decimal("5.00")
    sent = _fal_requests_per_job(stack, job_ids)
    assert sorted(sent) == sorted(job_ids)
    assert set(sent.values()) == {1}  # none lost, none sent twice


def test_fal_s_account_lock_holds_jobs_until_a_probe_goes_through(
    stack: LocalStack, target: Target, ledger: DynamoSpendLedger
) -> None:
    assert stack.emulator is not None
    control = stack.emulator.control
    tag = f"locked-{uuid.uuid4().hex[:6]}"
    control.lock_account()
    try:
        job_ids = _send(target, tag, 5)
        jobs = _settled(target, job_ids, {JobState.HELD}, timeout_s=60)
        assert {job.hold.reason for job in jobs if job.hold} == {"fal_account_locked"}
        assert all("Admin lock" in job.hold.message for job in jobs if job.hold)
        lock = ledger.lock()
        assert lock is not None
        run = stack.run_schedule("ReconcileFunction")  # still locked: at most one probe, held again
        assert run.ok, run.error
        _settled(target, job_ids, {JobState.HELD}, timeout_s=60)
    finally:
        control.unlock_account()

    time.sleep(1.5)  # FAL_LOCK_PROBE_SECONDS in the e2e stack
    run = stack.run_schedule("ReconcileFunction")
    assert run.ok, run.error
    assert run.payload["held_probe"] == 1
    deadline = time.monotonic() + 60
    while ledger.lock() is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        stack.run_schedule("ReconcileFunction")
    assert ledger.lock() is None
    done = _settled(target, job_ids, {JobState.COMPLETED}, timeout_s=120)
    assert len(done) == 5
    assert set(_fal_requests_per_job(stack, job_ids).values()) == {1}
