"""What every caller of the completion hand-off (webhook, reconcile) configures, validated once per
cold start from the environment template.yaml sets."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field

from falflow.aws.clients import aws_client
from falflow.aws.outputs import S3Inbox, SqsOutputsQueue
from falflow.completion.handoff import CompletionHandoff
from falflow.jobs import JobStore
from falflow.jobs.settings import JobsTableSettings


class HandoffSettings(JobsTableSettings):
    """What every caller of the completion hand-off (webhook, reconciler) needs."""

    output_bucket: Annotated[str, Field(min_length=1)]
    outputs_queue_url: Annotated[str, Field(min_length=1)]
    # A recorded completion whose hand-off to the store is still missing after this long is handed
    # over again by the next duplicate delivery (or the reconciler); longer than the webhook timeout.
    handoff_grace_seconds: Annotated[int, Field(ge=1)] = 60

    @property
    def handoff_grace(self) -> timedelta:
        return timedelta(seconds=self.handoff_grace_seconds)

    def completion_handoff(self, jobs: JobStore | None = None) -> CompletionHandoff:
        """The hand-off on the stack's table, inbox and outputs queue (webhook and reconcile alike)."""
        return CompletionHandoff(
            jobs or self.job_store(),
            S3Inbox(aws_client("s3"), self.output_bucket),
            SqsOutputsQueue(aws_client("sqs"), self.outputs_queue_url),
            handoff_grace=self.handoff_grace,
        )
