"""Per-job cost: fal's billing events when they exist, otherwise an estimate, marked as such.

A cost is one field written whole; a billing event replaces an estimate, an estimate is written
only where no cost is stored (`record_cost`). The estimate is the unit price times the units the
job record shows: image / video / audio files among its outputs, the seconds its input asked for,
or one per request; any other unit waits for its billing event. Only COMPLETED jobs are estimated.
Why: docs/adr/0013-job-costs-are-billed-or-estimated-and-say-which.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import PurePosixPath

from falflow.collect.model import PriceRow, add_exact
from falflow.fal.platform import BillingEvent
from falflow.jobs import Job, JobCost, JobState, JobStore
from falflow.spend.estimate import PER_CALL_UNITS, requested_seconds, unit_kind

# States in which fal may have billed the request.
BILLABLE_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
# Billing timestamps fall between submit and completion; start the query a little before submit.
BILLING_WINDOW_MARGIN = timedelta(hours=1)
# fal serves at most 90 days of billing events per call.
MAX_BILLING_WINDOW = timedelta(days=89)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"})
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus"})
RESULT_DOCUMENT = "result.json"


def needs_cost(job: Job) -> bool:
    """A job fal may have billed whose cost is not yet settled by a billing event."""
    return (
        job.request_id is not None
        and job.state in BILLABLE_STATES
        and (job.cost is None or job.cost.source == "estimate")
    )


def request_ids_of(job: Job) -> list[str]:
    """fal's ids for the job: the request id, and the gateway's when fal retried internally."""
    return [rid for rid in dict.fromkeys((job.request_id, job.gateway_request_id)) if rid]


def billing_window(jobs: Sequence[Job], now: datetime) -> tuple[datetime, datetime]:
    """From a little before the oldest job was created to just after now (``end`` is exclusive)."""
    oldest = min(datetime.fromisoformat(job.created_at) for job in jobs)
    end = now + timedelta(minutes=1)
    return max(oldest - BILLING_WINDOW_MARGIN, end - MAX_BILLING_WINDOW), end


def _event_amount(event: BillingEvent) -> float:
    if event.cost_total is not None:
        return event.cost_total
    if event.cost_subtotal is not None:
        return float(Decimal(repr(event.cost_subtotal)) - Decimal(repr(event.cost_discount or 0.0)))
    if event.cost_estimate_nano_usd is not None:
        return float(Decimal(repr(event.cost_estimate_nano_usd)) / Decimal(10**9))
    return 0.0


def cost_from_billing_events(events: Sequence[BillingEvent], price: PriceRow | None) -> JobCost:
    """The job's billed cost: the sum over its billing events (normally exactly one)."""
    if not events:
        raise ValueError("a billed cost needs at least one billing event")
    amount: float | None = None
    units: float | None = None
    for event in events:
        amount = add_exact(amount, _event_amount(event))
        units = add_exact(units, event.output_units)
    unit_prices = {event.unit_price for event in events}
    return JobCost(
        amount=amount or 0.0,
        currency=price.currency if price else "USD",
        source="billing_event",
        unit=price.unit if price else None,
        units=units,
        unit_price=unit_prices.pop() if len(unit_prices) == 1 else None,
    )


def _output_files(job: Job) -> list[PurePosixPath]:
    return [PurePosixPath(key) for key in job.outputs if PurePosixPath(key).name != RESULT_DOCUMENT]


def _count_with(job: Job, extensions: frozenset[str]) -> float | None:
    count = sum(1 for path in _output_files(job) if path.suffix.lower() in extensions)
    return float(count) if count else None


def estimated_units(job: Job, unit: str) -> float | None:
    """How many of ``unit`` the job used, by the rule in this module's docstring; None if unknown."""
    kind = unit_kind(unit)
    if kind == "image":
        return _count_with(job, IMAGE_EXTENSIONS)
    if kind == "video":
        return _count_with(job, VIDEO_EXTENSIONS)
    if kind == "audio":
        return _count_with(job, AUDIO_EXTENSIONS)
    if kind == "second":
        return requested_seconds(job.input)
    if kind in PER_CALL_UNITS:
        return 1.0
    return None


def estimate_cost(job: Job, price: PriceRow) -> JobCost | None:
    if job.state is not JobState.COMPLETED:
        return None
    units = estimated_units(job, price.unit)
    if units is None:
        return None
    return JobCost(
        amount=float(Decimal(repr(price.unit_price)) * Decimal(repr(units))),
        currency=price.currency,
        source="estimate",
        unit=price.unit,
        units=units,
        unit_price=price.unit_price,
    )


@dataclass
class CostTally:
    billed: int = 0  # costs written from billing events this run
    estimated: int = 0  # estimates written this run
    unchanged: int = 0  # the stored cost already said the same
    waiting: int = 0  # no billing event yet and no estimate possible (or already estimated)
    vanished: int = 0  # the job record is gone (TTL) or changed under us
    by_job: dict[str, JobCost] = field(default_factory=dict)
    # (model, change of the job's cost) for every cost written: a billed cost that replaces an
    # estimate adds only the difference, so a sum over time counts each job once.
    changes: list[tuple[str | None, float]] = field(default_factory=list)

    def counts(self) -> dict[str, float]:
        return {
            "costs_billed": self.billed,
            "costs_estimated": self.estimated,
            "costs_unchanged": self.unchanged,
            "costs_waiting": self.waiting,
            "costs_vanished": self.vanished,
        }


def settle_costs(
    store: JobStore,
    jobs: Iterable[Job],
    events: Iterable[BillingEvent],
    prices: Mapping[str, PriceRow],
) -> CostTally:
    """Write each job's cost: from its billing events, else an estimate where none is stored."""
    by_request: dict[str, list[BillingEvent]] = {}
    for event in events:
        by_request.setdefault(event.request_id, []).append(event)
    tally = CostTally()
    for job in jobs:
        price = prices.get(job.model or "")
        job_events = [event for rid in request_ids_of(job) for event in by_request.get(rid, [])]
        if job_events:
            cost = cost_from_billing_events(job_events, price)
            if job.cost == cost:
                tally.unchanged += 1
                continue
            written = store.record_cost(job.job_id, cost, replace_existing=True)
        else:
            estimate = estimate_cost(job, price) if price is not None and job.cost is None else None
            if estimate is None:
                tally.waiting += 1
                continue
            cost = estimate
            written = store.record_cost(job.job_id, cost, replace_existing=False)
        if written is None:
            tally.vanished += 1
            continue
        tally.by_job[job.job_id] = cost
        tally.changes.append((job.model, cost.amount - (job.cost.amount if job.cost is not None else 0.0)))
        if cost.source == "billing_event":
            tally.billed += 1
        else:
            tally.estimated += 1
    return tally
