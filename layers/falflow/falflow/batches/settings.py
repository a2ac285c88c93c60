"""Where batches are kept: env BATCH_TABLE (empty: no batches) and BATCHES_PREFIX, as template.yaml
sets them for every function that reads or tallies a batch."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from falflow.aws.clients import aws_client
from falflow.batches.store import DynamoBatchStore
from falflow.jobs.settings import JobsTableSettings


class BatchSettings(JobsTableSettings):
    batches_prefix: Annotated[str, Field(min_length=1)] = "batches/"
    # A fan-out unmoved this long with no step holding it has its continuation sent again by the
    # reconciler (falflow.batches.resume): longer than a continuation waits behind its own chunk.
    batch_stall_seconds: Annotated[int, Field(ge=60)] = 900

    def batch_store(self) -> DynamoBatchStore | None:
        return DynamoBatchStore(aws_client("dynamodb"), self.batch_table) if self.batch_table else None
