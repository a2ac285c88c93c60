"""An in-memory `JobStore` with the DynamoDB adapter's semantics (held equal to it by
tests/integration/jobs/test_job_store.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from falflow.jobs import ABSENT, STATE_RANK, BindOutcome, Job, JobState, TrailEntry, isoformat
from falflow.jobs.model import FINAL_RANK


def _get_path(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ABSENT
        node = node[part]
    return node


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value.model_dump(mode="json", exclude_none=True) if hasattr(value, "model_dump") else value


def _remove_path(data: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.get(part, {})
    node.pop(last, None)


class InMemoryJobStore:
    def __init__(self, retention: timedelta = timedelta(days=90)) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._retention = retention

    def _job(self, data: Mapping[str, Any]) -> Job:
        return Job.model_validate(data)

    def _holds(self, data: Mapping[str, Any], require: Mapping[str, Any] | None) -> bool:
        return all(_get_path(data, path) == expected for path, expected in (require or {}).items())

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
            return self._job(data), True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            data = self._items.get(job_id)
            return self._job(data) if data else None

    def _write(
        self,
        job_id: str,
        fields: Mapping[str, Any] | None,
        require: Mapping[str, Any] | None,
        remove: Sequence[str],
        check: Any = None,
    ) -> Job | None:
        data = self._items.get(job_id)
        if data is None or not self._holds(data, require) or (check is not None and not check(data)):
            return None
        for path, value in (fields or {}).items():
            _set_path(data, path, value)
        for path in remove:
            _remove_path(data, path)
        return self._job(data)

    def advance(
        self,
        job_id: str,
        to: JobState,
        *,
        now: datetime,
        fields: Mapping[str, Any] | None = None,
        require: Mapping[str, Any] | None = None,
        remove: Sequence[str] = (),
    ) -> Job | None:
        rank = STATE_RANK[to]
        at = isoformat(now)
        updates: dict[str, Any] = {"state": to.value, "state_changed_at": at, f"state_times.{to.value}": at}
        if rank == FINAL_RANK:
            updates["expires_at"] = int((now + self._retention).timestamp())
        updates.update(fields or {})
        with self._lock:
            return self._write(
                job_id, updates, require, remove, check=lambda d: STATE_RANK[JobState(d["state"])] < rank
            )

    def update(
        self,
        job_id: str,
        *,
        fields: Mapping[str, Any] | None = None,
        require: Mapping[str, Any] | None = None,
        remove: Sequence[str] = (),
        max_rank: int | None = None,
    ) -> Job | None:
        if not fields and not remove:
            raise ValueError("update needs fields to set or remove")
        with self._lock:
            return self._write(
                job_id,
                fields,
                require,
                remove,
                check=None if max_rank is None else lambda d: STATE_RANK[JobState(d["state"])] <= max_rank,
            )

    def bind_request(
        self, job_id: str, request_id: str, *, fields: Mapping[str, Any] | None = None
    ) -> BindOutcome:
        with self._lock:
            data = self._items.get(job_id)
            if data is None:
                return BindOutcome(job=None, bound=False)
            current = data.get("request_id")
            if current not in (None, request_id):
                return BindOutcome(job=self._job(data), bound=False, conflicting_request_id=current)
            job = self._write(job_id, {"request_id": request_id, **(fields or {})}, None, ())
            return BindOutcome(job=job, bound=True)

    def claim_submit(self, job_id: str, *, now: datetime, lease: timedelta) -> Job | None:
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

    def add_trail(self, job_id: str, entry: TrailEntry) -> None:
        with self._lock:
            data = self._items.get(job_id)
            if data is not None:
                data.setdefault("trail", []).append(entry.model_dump(mode="json"))

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

    def find_by_request_id(self, request_id: str) -> Job | None:
        with self._lock:
            for data in self._items.values():
                if data.get("request_id") == request_id:
                    return self._job(data)
        return None
