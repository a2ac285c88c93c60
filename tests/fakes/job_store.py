"""An in-memory `JobStore` with the DynamoDB adapter's semantics: the contract test
(tests/integration/jobs/test_job_store.py) runs every transition against both."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from falflow.jobs import (
    STATE_RANK,
    BindOutcome,
    ChargeOutcome,
    CounterCharge,
    Job,
    JobCost,
    JobError,
    JobHold,
    JobState,
    RequestUrls,
    SpendReservation,
    TrailEntry,
    appended_trail,
    isoformat,
)
from falflow.jobs.batch import batch_of_job
from falflow.jobs.model import FINAL_RANK

_Check = Callable[[Mapping[str, Any]], bool]
_MISSING = object()


def _get_path(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value.model_dump(mode="json", exclude_none=True) if hasattr(value, "model_dump") else value


def _absent(path: str) -> _Check:
    return lambda data: _get_path(data, path) is _MISSING


def _equal(path: str, expected: Any) -> _Check:
    return lambda data: _get_path(data, path) == expected


def _rank(data: Mapping[str, Any]) -> int:
    return STATE_RANK[JobState(data["state"])]


def _before_submit(data: Mapping[str, Any]) -> bool:
    return _rank(data) <= STATE_RANK[JobState.ACCEPTED]


_NO_REQUEST = _absent("request_id")


class InMemoryJobStore:
    def __init__(self, retention: timedelta = timedelta(days=90)) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._claims: dict[str, str] = {}  # fal request id -> the job that claimed it
        # Counters of other tables charged with a job's write: (table, key) -> amount.
        self.counters: dict[tuple[str, str], Decimal] = {}
        # Batch lines final by state, counted with the write that made them final: (batch, state) -> n.
        self.batch_tallies: Counter[tuple[str, str]] = Counter()
        self.batch_costs: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.RLock()  # re-entered where a write and its batch counter move together
        self._retention = retention

    def _job(self, data: Mapping[str, Any]) -> Job:
        return Job.model_validate(data)

    def _write(
        self,
        job_id: str,
        sets: Mapping[str, Any],
        *checks: _Check,
        removes: Sequence[str] = (),
    ) -> Job | None:
        with self._lock:
            data = self._items.get(job_id)
            if data is None or not all(check(data) for check in checks):
                return None
            for path, value in sets.items():
                _set_path(data, path, value)
            for path in removes:
                data.pop(path, None)
            return self._job(data)

    def _advance(
        self,
        job_id: str,
        to: JobState,
        now: datetime,
        sets: Mapping[str, Any],
        *checks: _Check,
        removes: Sequence[str] = (),
    ) -> Job | None:
        rank = STATE_RANK[to]
        updates = self._entered(to, now)
        if rank == FINAL_RANK:
            updates["expires_at"] = int((now + self._retention).timestamp())
        updates.update(sets)
        job = self._write(job_id, updates, lambda d: _rank(d) < rank, *checks, removes=removes)
        if job is not None and rank == FINAL_RANK:
            self._tally(job)
        return job

    def _tally(self, job: Job) -> None:
        batch = batch_of_job(job.job_id)
        if batch is not None:
            with self._lock:
                self.batch_tallies[(batch, job.state.value)] += 1

    # ---------------------------------------------------------------------------------- queries

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            data = self._items.get(job_id)
            return self._job(data) if data else None

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        return {job.job_id: job for job in map(self.get, job_ids) if job is not None}

    def list_by_state(
        self,
        state: JobState,
        *,
        changed_before: datetime | None = None,
        changed_after: datetime | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> Iterator[Job]:
        low = isoformat(changed_after) if changed_after else ""
        high = isoformat(changed_before) if changed_before else "~"
        with self._lock:
            rows = sorted(
                (
                    d
                    for d in self._items.values()
                    if d["state"] == state.value and low <= d["state_changed_at"] <= high
                ),
                key=lambda d: d["state_changed_at"],
                reverse=newest_first,
            )
            jobs = [self._job(d) for d in rows[:limit]]
        return iter(jobs)

    def list_unannounced(
        self, state: JobState, *, changed_before: datetime, changed_after: datetime
    ) -> Iterator[Job]:
        jobs = self.list_by_state(state, changed_before=changed_before, changed_after=changed_after)
        return iter([job for job in jobs if job.event_published_at is None])

    def find_by_request_id(self, request_id: str) -> Job | None:
        with self._lock:
            for data in self._items.values():
                if data.get("request_id") == request_id:
                    return self._job(data)
        return None

    def request_holder(self, request_id: str) -> str | None:
        with self._lock:
            return self._claims.get(request_id)

    def _claim(self, job_id: str, request_id: str) -> bool:
        with self._lock:
            return self._claims.setdefault(request_id, job_id) == job_id

    # ----------------------------------------------------------------------------------- submit

    def create(self, job: Job) -> tuple[Job, bool]:
        with self._lock:
            if job.job_id in self._items:
                return self._job(self._items[job.job_id]), False
            data = job.model_dump(mode="json", exclude_none=True)
            if job.is_final and job.expires_at is None:
                data["expires_at"] = int(
                    (datetime.fromisoformat(job.state_changed_at) + self._retention).timestamp()
                )
            self._items[job.job_id] = data
            created = self._job(data)
        if created.is_final:
            self._tally(created)
        return created, True

    def claim_submit_lease(self, job_id: str, *, now: datetime, lease: timedelta) -> Job | None:
        with self._lock:
            data = self._items.get(job_id)
            if (
                data is None
                or data["state"] != JobState.ACCEPTED.value
                or data.get("request_id") is not None
                or data.get("submit_lease_until", "") >= isoformat(now)
            ):
                return None
            data["submit_lease_until"] = isoformat(now + lease)
            data["attempts"] = data.get("attempts", 0) + 1
            return self._job(data)

    def record_submission(
        self, job_id: str, request_id: str, urls: RequestUrls, *, now: datetime
    ) -> Job | None:
        if not self._claim(job_id, request_id):
            return None
        sets = {"request_id": request_id, **urls.fields()}
        return self._advance(
            job_id, JobState.SUBMITTED, now, sets, _NO_REQUEST, removes=["submit_lease_until"]
        )

    def bind_request(self, job_id: str, request_id: str, *, urls: RequestUrls | None = None) -> BindOutcome:
        sets = {"request_id": request_id, **(urls.fields() if urls else {})}
        job = None
        if self._claim(job_id, request_id):
            job = self._write(job_id, sets, lambda d: d.get("request_id") in (None, request_id))
        if job is not None:
            return BindOutcome(job=job, bound=True)
        current = self.get(job_id)
        return BindOutcome(
            job=current, bound=False, conflicting_request_id=current.request_id if current else None
        )

    def record_duplicate_request(self, job_id: str, request_id: str) -> Job | None:
        if not self._claim(job_id, request_id):
            return None
        with self._lock:
            data = self._items.get(job_id)
            if data is None:
                return None
            duplicates = data.get("duplicate_requests", [])
            if data.get("request_id") == request_id or request_id in duplicates:
                return None
            data["duplicate_requests"] = [*duplicates, request_id]
            return self._job(data)

    def confirm_submission(self, job_id: str, request_id: str, *, now: datetime) -> Job | None:
        return self._advance(
            job_id,
            JobState.SUBMITTED,
            now,
            {},
            _equal("request_id", request_id),
            removes=["submit_lease_until"],
        )

    def record_ambiguous_submit(self, job_id: str, *, now: datetime, hold_until: datetime) -> Job | None:
        sets = {"submit_ambiguous_at": isoformat(now), "submit_lease_until": isoformat(hold_until)}
        return self._write(job_id, sets, _NO_REQUEST, _before_submit)

    def release_submit_lease(self, job_id: str, *, held_until: str) -> Job | None:
        return self._write(
            job_id,
            {},
            _equal("submit_lease_until", held_until),
            _NO_REQUEST,
            _before_submit,
            removes=["submit_lease_until"],
        )

    def reject(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        return self._advance(
            job_id, JobState.REJECTED, now, {"error": error}, _NO_REQUEST, removes=["submit_lease_until"]
        )

    def fail_before_submit(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        return self._advance(
            job_id, JobState.FAILED, now, {"error": error}, _NO_REQUEST, removes=["submit_lease_until"]
        )

    # --------------------------------------------------------------------------- spend control

    def reserve_spend(
        self, job_id: str, reservation: SpendReservation, charges: Sequence[CounterCharge], *, lease: str
    ) -> ChargeOutcome:
        checks = (
            _equal("state", JobState.ACCEPTED.value),
            _equal("submit_lease_until", lease),
            _NO_REQUEST,
            _absent("reservation"),
        )
        return self._charged(job_id, {"reservation": reservation}, checks, charges, removes=())

    def hold(self, job_id: str, hold: JobHold, *, now: datetime, lease: str | None) -> Job | None:
        checks = [_equal("state", JobState.ACCEPTED.value), _NO_REQUEST]
        if lease is not None:
            checks.append(_equal("submit_lease_until", lease))
        sets = {**self._entered(JobState.HELD, now), "hold": hold}
        return self._write(job_id, sets, *checks, removes=["submit_lease_until"])

    def release_held(
        self,
        job_id: str,
        *,
        now: datetime,
        reservation: SpendReservation | None = None,
        charges: Sequence[CounterCharge] = (),
    ) -> ChargeOutcome:
        checks: list[_Check] = [_equal("state", JobState.HELD.value), _NO_REQUEST]
        sets: dict[str, Any] = self._entered(JobState.ACCEPTED, now)
        if reservation is not None:
            sets["reservation"] = reservation
            checks.append(_absent("reservation"))
        return self._charged(job_id, sets, checks, charges, removes=("hold", "submit_lease_until"))

    def settle_reservation(
        self, job_id: str, *, amount: float, charges: Sequence[CounterCharge], now: datetime
    ) -> ChargeOutcome:
        sets = {"reservation.settled_at": isoformat(now), "reservation.settled_amount": amount}
        checks = (lambda d: _get_path(d, "reservation") is not _MISSING, _absent("reservation.settled_at"))
        return self._charged(job_id, sets, checks, charges, removes=())

    @staticmethod
    def _entered(state: JobState, now: datetime) -> dict[str, Any]:
        at = isoformat(now)
        return {"state": state.value, "state_changed_at": at, f"state_times.{state.value}": at}

    def _charged(
        self,
        job_id: str,
        sets: Mapping[str, Any],
        checks: Sequence[_Check],
        charges: Sequence[CounterCharge],
        *,
        removes: Sequence[str],
    ) -> ChargeOutcome:
        with self._lock:
            data = self._items.get(job_id)
            if data is None or not all(check(data) for check in checks):
                return ChargeOutcome(None)
            for charge in charges:
                spent = self.counters.get((charge.table, charge.key), Decimal(0))
                if charge.ceiling is not None and spent + charge.amount > charge.ceiling:
                    return ChargeOutcome(None, full=charge)
            for charge in charges:
                key = (charge.table, charge.key)
                self.counters[key] = self.counters.get(key, Decimal(0)) + charge.amount
            for path, value in sets.items():
                _set_path(data, path, value)
            for path in removes:
                data.pop(path, None)
            return ChargeOutcome(self._job(data))

    # ----------------------------------------------------------------------------- fal's answer

    def mark_in_progress(self, job_id: str, request_id: str, *, now: datetime) -> Job | None:
        return self._advance(job_id, JobState.IN_PROGRESS, now, {}, _equal("request_id", request_id))

    def record_completion(
        self, job_id: str, request_id: str, *, completion_key: str, source: str, now: datetime
    ) -> Job | None:
        return self._advance(
            job_id,
            JobState.STORING,
            now,
            {"completion_key": completion_key, "completion_source": source},
            _equal("request_id", request_id),
            _absent("completion_key"),
        )

    def mark_handed_over(self, job_id: str, completion_key: str, *, now: datetime) -> Job | None:
        return self._write(
            job_id, {"completion_enqueued_at": isoformat(now)}, _equal("completion_key", completion_key)
        )

    # ------------------------------------------------------------------------------------ store

    def take_store_lease(
        self, job_id: str, *, seen_until: str | None, now: datetime, lease: timedelta
    ) -> Job | None:
        if seen_until is not None and seen_until > isoformat(now):
            return None
        seen = _absent("store_lease_until") if seen_until is None else _equal("store_lease_until", seen_until)
        return self._write(job_id, {"store_lease_until": isoformat(now + lease)}, seen)

    def release_store_lease(self, job_id: str, *, held_until: str) -> Job | None:
        return self._write(job_id, {}, _equal("store_lease_until", held_until), removes=["store_lease_until"])

    def take_over_store_lease(self, job_id: str, *, expired_until: str, now: datetime) -> Job | None:
        if expired_until > isoformat(now):
            return None
        with self._lock:
            data = self._items.get(job_id)
            if (
                data is None
                or data["state"] != JobState.STORING.value
                or data.get("store_lease_until") != expired_until
            ):
                return None
            del data["store_lease_until"]
            data["completion_enqueued_at"] = isoformat(now)
            data["store_takeovers"] = data.get("store_takeovers", 0) + 1
            return self._job(data)

    def take_over_handoff(self, job_id: str, *, handed_over_at: str, now: datetime) -> Job | None:
        with self._lock:
            data = self._items.get(job_id)
            if (
                data is None
                or data["state"] != JobState.STORING.value
                or data.get("store_lease_until") is not None
                or data.get("completion_enqueued_at") != handed_over_at
            ):
                return None
            data["completion_enqueued_at"] = isoformat(now)
            data["store_takeovers"] = data.get("store_takeovers", 0) + 1
            return self._job(data)

    def complete(
        self,
        job_id: str,
        *,
        request_id: str | None,
        outputs: Sequence[str],
        result_key: str,
        timings: Mapping[str, Any],
        now: datetime,
        served_from: str | None = None,
        payloads_deleted_at: str | None = None,
    ) -> Job | None:
        sets: dict[str, Any] = {"outputs": list(outputs), "result_key": result_key, "timings": dict(timings)}
        if served_from is not None:
            sets["served_from"] = served_from
        if payloads_deleted_at is not None:
            sets["payloads_deleted_at"] = payloads_deleted_at
        checks = () if request_id is None else (_equal("request_id", request_id),)
        return self._advance(job_id, JobState.COMPLETED, now, sets, *checks)

    def fail(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        return self._advance(job_id, JobState.FAILED, now, {"error": error})

    def fail_unanswered(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        return self._advance(job_id, JobState.FAILED, now, {"error": error}, _absent("completion_key"))

    def claim_event(self, job_id: str, *, now: datetime, until: datetime) -> Job | None:
        def claim_over(data: dict[str, Any]) -> bool:
            return bool(data.get("event_claimed_until", "") < isoformat(now))

        return self._write(
            job_id, {"event_claimed_until": isoformat(until)}, _absent("event_published_at"), claim_over
        )

    def mark_event_published(self, job_id: str, *, now: datetime) -> Job | None:
        return self._write(job_id, {"event_published_at": isoformat(now)}, _absent("event_published_at"))

    # ------------------------------------------------------------------------------ collect, ops

    def record_cost(self, job_id: str, cost: JobCost, *, replace_existing: bool) -> Job | None:
        checks = () if replace_existing else (_absent("cost"),)
        with self._lock:  # the write and the batch's cost so far move together
            before = self.get(job_id)
            job = self._write(job_id, {"cost": cost}, *checks)
            batch = batch_of_job(job_id)
            if job is not None and batch is not None:
                replaced = before.cost.amount if before is not None and before.cost is not None else 0.0
                self.batch_costs[batch] += cost.amount - replaced
        return job

    def cancel_unsubmitted(self, job_id: str, *, now: datetime) -> Job | None:
        return self._advance(job_id, JobState.CANCELLED, now, {}, _NO_REQUEST)

    def cancel(self, job_id: str, *, now: datetime) -> Job | None:
        return self._advance(job_id, JobState.CANCELLED, now, {})

    def add_trail(self, job_id: str, entry: TrailEntry) -> None:
        with self._lock:
            data = self._items.get(job_id)
            if data is None:
                return
            job = self._job(data)
            appended = appended_trail(job.trail, entry)
            if appended is None:
                return
            trail, dropped = appended
            data["trail"] = [kept.model_dump(mode="json") for kept in trail]
            data["trail_dropped"] = job.trail_dropped + dropped
