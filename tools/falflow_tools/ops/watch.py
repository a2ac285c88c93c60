"""Following jobs until they are final: one job, several, or every unfinished job (`--all`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from falflow.jobs import FINAL_STATES, Job, JobState, utcnow
from falflow_tools.ops.jobs import job_duration_s, list_jobs
from falflow_tools.ops.target import Target

UNFINISHED_STATES = [state for state in JobState if state not in FINAL_STATES]
# --all follows at most this many jobs (newest first), so a backlog cannot make a poll slow.
MAX_WATCHED = 200


@dataclass(frozen=True)
class Seen:
    """One job as the last poll found it; `job` is None while it is not in the table yet."""

    job_id: str
    job: Job | None
    seen_at: datetime  # when it was read: a running job's elapsed time is up to this moment

    @property
    def state(self) -> str:
        return self.job.state.value if self.job else "NOT RECORDED"

    @property
    def is_final(self) -> bool:
        return self.job is not None and self.job.is_final

    @property
    def elapsed_s(self) -> float | None:
        return job_duration_s(self.job, self.seen_at) if self.job else None


class JobWatch:
    """Polls the job table for the jobs it follows. With `every_unfinished`, each poll also adds
    the jobs that are unfinished now (jobs started while watching join in), of `model` if given."""

    def __init__(
        self,
        target: Target,
        job_ids: Sequence[str] = (),
        *,
        every_unfinished: bool = False,
        model: str | None = None,
    ):
        self._target = target
        self._store = target.job_store()
        self._job_ids = list(dict.fromkeys(job_ids))
        self._every_unfinished = every_unfinished
        self._model = model

    def poll(self) -> list[Seen]:
        if self._every_unfinished:
            unfinished = list_jobs(
                self._target, states=UNFINISHED_STATES, model=self._model, limit=MAX_WATCHED
            )
            known = set(self._job_ids)
            self._job_ids.extend(job.job_id for job in reversed(unfinished) if job.job_id not in known)
        return [Seen(job_id, self._store.get(job_id), utcnow()) for job_id in self._job_ids]

    @staticmethod
    def done(seen: Sequence[Seen]) -> bool:
        return all(entry.is_final for entry in seen)
