"""Budgets on moto (the template's jobs and spend tables): reservations are atomic with the job's
record, never commit more than a cap under concurrent submitters, hold what does not fit, release
it when it fits, and settle to the billed cost."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from falflow.aws.clients import aws_client
from falflow.jobs import DynamoJobStore, Job, JobCost, JobState, isoformat
from falflow.reconcile.settings import ReconcileSettings
from falflow.spend.caps import BudgetConfig, Caps
from falflow.spend.gate import Admission, SpendAnnouncer, SpendGate, settle
from falflow.spend.ledger import DynamoSpendLedger
from falflow.spend.release import Release, Releaser
from falflow.submit.settings import SubmitSettings
from falflow_tools.local.resources import ProvisionedStack

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LEASE = isoformat(NOW + timedelta(minutes=2))


Parts = tuple[DynamoJobStore, DynamoSpendLedger, "Recorder"]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.sent: list[str] = []

    def publish(self, detail_type: str, detail: Any) -> None:
        self.events.append((detail_type, dict(detail)))

    def send(self, body: str) -> None:
        self.sent.append(body)


@pytest.fixture
def parts(aws: ProvisionedStack) -> Parts:
    store = DynamoJobStore(aws_client("dynamodb"), aws.tables["JobsTable"], retention=timedelta(days=1))
    ledger = DynamoSpendLedger(
        aws_client("dynamodb"),
        aws.tables["SpendTable"],
        defaults=BudgetConfig(stack=Caps(daily_usd=1.0)),
        config_ttl=timedelta(0),
        clock=lambda: NOW,
    )
    return store, ledger, Recorder()


def gate_of(store: DynamoJobStore, ledger: DynamoSpendLedger, recorder: Recorder) -> SpendGate:
    return SpendGate(ledger=ledger, store=store, announcer=SpendAnnouncer(ledger, recorder))


def releaser_of(store: DynamoJobStore, ledger: DynamoSpendLedger, recorder: Recorder) -> Releaser:
    return Releaser(
        store=store,
        ledger=ledger,
        announcer=SpendAnnouncer(ledger, recorder),
        intake=recorder,
        lock_probe_seconds=60,
    )


def accepted(store: DynamoJobStore, n: int, *, amount: float = 0.05, at: datetime = NOW) -> Job:
    job = Job.new(
        f"job-{n:03d}",
        source=f"sqs://m{n}",
        source_kind="sqs",
        now=at,
        model="fal-ai/flux/dev",
        input={"prompt": f"p{n}", "num_images": 2},
        submit_lease_until=LEASE,
        estimate=JobCost(amount=amount, source="estimate", unit="image", units=2, unit_price=amount / 2),
    )
    stored, created = store.create(job)
    assert created
    return stored


def spent(ledger: DynamoSpendLedger, key: str = "daily#2026-12-02#all") -> Decimal:
    return ledger.spent([key])[key]


def test_ten_concurrent_submitters_never_commit_more_than_the_cap(
    parts: Parts,
) -> None:
    store, ledger, recorder = parts
    gate = gate_of(store, ledger, recorder)
    jobs = [accepted(store, n) for n in range(100)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        verdicts = list(pool.map(lambda job: gate.admit(job, NOW), jobs))

    admitted = [v for v in verdicts if v.admission is Admission.ADMITTED]
    held = [v for v in verdicts if v.admission is Admission.HELD]
    assert (len(admitted), len(held)) == (20, 80)
    assert spent(ledger) == Decimal("1.00")
    for job in jobs:
        _assert_held_or_reserved(store, job.job_id)
    # Each threshold of the cap announced once, and every hold.
    thresholds = [d["threshold_percent"] for t, d in recorder.events if t == "Budget Threshold Reached"]
    assert sorted(thresholds) == [50, 75, 90, 100]
    assert sum(1 for t, _ in recorder.events if t == "Job Held") == 80


def _assert_held_or_reserved(store: DynamoJobStore, job_id: str) -> None:
    stored = store.get(job_id)
    assert stored is not None
    if stored.state is JobState.HELD:
        assert stored.hold is not None
        assert stored.reservation is None
        assert stored.hold.cap == "daily#all"
        assert stored.hold.resets_at == "2026-12-03T00:00:00.000+00:00"
        assert stored.submit_lease_until is None
    else:
        assert stored.state is JobState.ACCEPTED
        assert stored.reservation is not None
        assert stored.reservation.counters == ["daily#2026-12-02#all"]


def test_a_refused_charge_leaves_the_job_unreserved_and_a_redelivery_reserves_once(
    parts: Parts,
) -> None:
    store, ledger, recorder = parts
    gate = gate_of(store, ledger, recorder)
    job = accepted(store, 1, amount=0.6)
    assert gate.admit(job, NOW).admission is Admission.ADMITTED
    again = store.get(job.job_id)
    assert again is not None
    assert gate.admit(again, NOW).admission is Admission.ADMITTED  # already reserved: no charge
    assert spent(ledger) == Decimal("0.6")

    second = accepted(store, 2, amount=0.6)
    verdict = gate.admit(second, NOW)
    assert verdict.admission is Admission.HELD
    stored = store.get(second.job_id)
    assert stored is not None
    assert stored.reservation is None
    assert stored.state is JobState.HELD
    assert spent(ledger) == Decimal("0.6")  # the cancelled transaction left nothing behind


def test_an_estimate_larger_than_the_cap_says_so(
    parts: Parts,
) -> None:
    store, ledger, recorder = parts
    verdict = gate_of(store, ledger, recorder).admit(accepted(store, 1, amount=2.5), NOW)
    assert verdict.admission is Admission.HELD
    assert verdict.hold is not None
    assert "larger than the daily cap of $1" in verdict.hold.message


def test_raising_the_cap_releases_every_held_job_in_one_run_oldest_first(
    parts: Parts,
) -> None:
    store, ledger, recorder = parts
    gate = gate_of(store, ledger, recorder)
    for n in range(30):
        gate.admit(accepted(store, n, at=NOW + timedelta(seconds=n)), NOW + timedelta(seconds=n))
    releaser = releaser_of(store, ledger, recorder)
    assert releaser.run(NOW).outcomes[Release.RELEASED] == 0  # still full: nothing released
    assert recorder.sent == []

    ledger.put_config(BudgetConfig(stack=Caps(daily_usd=5.0)))
    report = releaser.run(NOW)
    assert report.outcomes[Release.RELEASED] == 10
    assert spent(ledger) == Decimal("1.50")
    released_ids = [json.loads(body)["job_id"] for body in recorder.sent]
    assert released_ids == sorted(released_ids)  # oldest first
    for job_id in released_ids:
        job = store.get(job_id)
        assert job is not None
        assert job.state is JobState.ACCEPTED
        assert job.hold is None
        assert job.reservation is not None
        assert job.submit_lease_until is None
    assert list(store.list_by_state(JobState.HELD)) == []


def test_a_release_re_checks_the_cap_and_stops_at_the_first_that_does_not_fit(
    parts: Parts,
) -> None:
    store, ledger, recorder = parts
    gate = gate_of(store, ledger, recorder)
    for n in range(40):
        gate.admit(accepted(store, n, at=NOW + timedelta(seconds=n)), NOW + timedelta(seconds=n))
    ledger.put_config(BudgetConfig(stack=Caps(daily_usd=1.5)))
    releaser = releaser_of(store, ledger, recorder)
    report = releaser.run(NOW)
    assert report.outcomes[Release.RELEASED] == 10
    assert spent(ledger) == Decimal("1.50")
    assert len(list(store.list_by_state(JobState.HELD))) == 10


def test_a_billed_cost_replaces_the_estimate_in_the_counters(
    parts: Parts,
) -> None:
    store, ledger, recorder = parts
    job = accepted(store, 1, amount=0.05)
    gate_of(store, ledger, recorder).admit(job, NOW)
    reserved = store.get(job.job_id)
    assert reserved is not None
    billed = JobCost(amount=0.04, source="billing_event")
    assert settle(store, reserved, billed.amount, ledger.table, NOW)
    assert spent(ledger) == Decimal("0.04")
    settled = store.get(job.job_id)
    assert settled is not None
    assert settled.reservation is not None
    assert settled.reservation.settled_amount == 0.04
    assert not settle(store, settled, billed.amount, ledger.table, NOW)  # once
    assert spent(ledger) == Decimal("0.04")


def test_fal_s_lock_holds_jobs_and_one_probe_releases_them_once_it_goes_through(
    parts: Parts,
) -> None:
    store, ledger, recorder = parts
    gate = SpendGate(
        ledger=ledger,
        store=store,
        announcer=SpendAnnouncer(ledger, recorder),
        lock_probe=timedelta(seconds=60),
    )
    for n in range(3):
        job = accepted(store, n, at=NOW + timedelta(seconds=n))
        gate.admit(job, NOW)
        leased = store.get(job.job_id)
        assert leased is not None
        assert gate.hold_for_lock(leased, "Exhausted balance.", NOW).admission is Admission.HELD
    lock = ledger.lock()
    assert lock is not None
    assert lock.reason == "Exhausted balance."
    releaser = releaser_of(store, ledger, recorder)
    assert releaser.run(NOW).outcomes == {}  # the probe is not due yet
    later = NOW + timedelta(seconds=61)
    assert releaser.run(later).outcomes[Release.PROBE] == 1
    assert [json.loads(body)["job_id"] for body in recorder.sent] == ["job-000"]
    assert releaser.run(later).outcomes == {}  # the probe is out; nothing else moves

    # The probe reached fal: the lock is cleared and the rest released, reserved only once.
    assert store.record_submission("job-000", "req-0", _urls(), now=later) is not None
    report = releaser.run(later)
    assert report.lock_cleared
    assert report.outcomes[Release.RELEASED] == 2
    assert ledger.lock() is None
    assert spent(ledger) == Decimal("0.15")


def _urls() -> Any:
    from falflow.jobs import RequestUrls  # noqa: PLC0415

    return RequestUrls()


ROUTES = {
    "upscale/": {
        "model": "fal-ai/clarity-upscaler",
        "input": {"image_url": "{file_url}"},
        "daily_budget_usd": 5,
    },
    "animate/": {"model": "fal-ai/kling", "input": {"prompt": "{file_text}"}},
}


@pytest.mark.parametrize("function", ["SubmitFunction", "ReconcileFunction"])
def test_both_functions_that_check_budgets_read_the_same_deploy_time_caps(
    function: str, aws: ProvisionedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {
        "ROUTES": json.dumps(ROUTES),
        "DAILY_BUDGET_USD": "20",
        "MONTHLY_BUDGET_USD": "300",
        "UNPRICED_JOBS": "hold",
    }
    for name, value in aws.function_environment(function, overrides).items():
        monkeypatch.setenv(name, value)
    settings_class = SubmitSettings if function == "SubmitFunction" else ReconcileSettings
    defaults = settings_class().budget_defaults()  # type: ignore[call-arg]
    assert defaults == BudgetConfig(
        stack=Caps(daily_usd=20, monthly_usd=300), routes={"upscale/": Caps(daily_usd=5)}, unpriced="hold"
    )
