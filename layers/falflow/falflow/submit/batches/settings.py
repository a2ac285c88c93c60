"""How the submit function fans a batch out: env BATCH_CHUNK_LINES and INTAKE_QUEUE_URL (its own
queue), besides where batches are kept (falflow.batches.settings)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from falflow.aws.intake import SqsIntakeQueue
from falflow.batches.objects import S3Manifests
from falflow.batches.settings import BatchSettings
from falflow.batches.store import DynamoBatchStore
from falflow.submit.batches.fanout import STEP_LEASE, STEP_LEASE_OF_SUBMIT_LEASE, BatchFanOut, Estimator
from falflow.submit.batches.intake import BatchIntake

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class FanOutSettings(BatchSettings):
    # Lines one fan-out step sends: a step sends them in well under the submit function's timeout.
    batch_chunk_lines: Annotated[int, Field(ge=1, le=5000)] = 500
    # The queue a fan-out sends its lines and continuations to (the submit function's own).
    intake_queue_url: str = ""

    def batch_intake(
        self,
        store: DynamoBatchStore | None,
        s3: S3Client,
        estimator: Estimator | None,
        *,
        input_bucket: str,
        submit_lease: timedelta | None = None,
    ) -> BatchIntake | None:
        """The submit path's batch steps (None without a batches table or intake queue). A step's
        lease is a share of the submit's lease, so it stays shorter than the intake queue's
        visibility timeout wherever that lease is scaled (a killed step's message must come back
        to a lease that has ended, or it does nothing and the batch stops fanning out)."""
        if store is None or not self.intake_queue_url:
            return None
        fan_out = BatchFanOut(
            store,
            S3Manifests(s3),
            SqsIntakeQueue(self.intake_queue_url),
            chunk_lines=self.batch_chunk_lines,
            estimator=estimator,
            step_lease=submit_lease * STEP_LEASE_OF_SUBMIT_LEASE if submit_lease else STEP_LEASE,
        )
        return BatchIntake(fan_out, prefix=self.batches_prefix, input_bucket=input_bucket)
