"""A job's place in a batch (falflow.submit.batches): the batch it belongs to, the line's ``custom_id`` and
line number, and the job id both derive, so that a re-read line or a duplicate notification of the
manifest maps to the job it made before. Batch job ids are ``b:<batch>:<digest of custom_id>``; the
prefix is reserved (docs/adr/0031-a-batch-is-a-manifest-fanned-out-into-jobs.md), which is how the
job store knows, from the id alone, which batch's tally a job's final state goes to.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Final

from pydantic import ConfigDict, Field, StringConstraints

from falflow.deferred import DeferredModel

BATCH_JOB_PREFIX: Final = "b:"
# A batch's name: a path segment of its results' keys, part of each of its job ids.
BATCH_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"
MAX_CUSTOM_ID_CHARS: Final = 256
_DIGEST_CHARS = 24  # 96 bits: distinct custom ids of one batch never share a job id

BatchName = Annotated[str, StringConstraints(pattern=BATCH_NAME_PATTERN)]
CustomId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CUSTOM_ID_CHARS)]


class JobBatch(DeferredModel):
    """Which batch line a job is."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: BatchName
    custom_id: CustomId
    line: Annotated[int, Field(ge=1)]
    # The batch's budget in USD, if it has one: a cap its lines are reserved against (falflow.spend).
    budget_usd: Annotated[float, Field(gt=0)] | None = None

    @property
    def job_id(self) -> str:
        return batch_job_id(self.name, self.custom_id)


def batch_job_id(name: str, custom_id: str) -> str:
    digest = hashlib.sha256(custom_id.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{BATCH_JOB_PREFIX}{name}:{digest}"


def batch_of_job(job_id: str) -> str | None:
    """The name of the batch a job id belongs to (None for a job of no batch)."""
    if not job_id.startswith(BATCH_JOB_PREFIX):
        return None
    name, _, digest = job_id.removeprefix(BATCH_JOB_PREFIX).rpartition(":")
    return name if name and len(digest) == _DIGEST_CHARS else None
