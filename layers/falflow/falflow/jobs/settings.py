"""Which jobs table a function uses and how long finished jobs stay in it: one setting shared by
every function's settings (env JOBS_TABLE, JOB_RETENTION_DAYS as template.yaml sets them)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from falflow.aws.clients import aws_client
from falflow.jobs.store import DynamoJobStore


class JobsTableSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    jobs_table: Annotated[str, Field(min_length=1)]
    job_retention_days: Annotated[int, Field(ge=1)] = 90
    # The batches table (falflow.submit.batches), where a batch line's final state is tallied.
    batch_table: str | None = None

    @property
    def job_retention(self) -> timedelta:
        return timedelta(days=self.job_retention_days)

    def job_store(self) -> DynamoJobStore:
        return DynamoJobStore(
            aws_client("dynamodb"),
            self.jobs_table,
            retention=self.job_retention,
            batch_table=self.batch_table,
        )
