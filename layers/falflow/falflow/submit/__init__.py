"""The submit path: S3 media drops, S3 job documents and SQS job messages become fal jobs, once each.

- `SubmitService.submit_job(source)` — the orchestration (falflow.submit.service: write order,
  failure classes, the ambiguity rule);
- `Planner` — a source becomes a job plan (routes, job documents, job messages, job ids);
- `InputFiles` — input files checked, then turned into presigned URLs or fal CDN uploads;
- `SubmitApp` — the Lambda edge: SQS batch in, partial batch failures out, concurrent submits.
"""

from falflow.submit.files import CheckedInputs, InputFiles
from falflow.submit.intake import SubmitApp, sources_from_body
from falflow.submit.objects import InputArchive, InputObjects, S3InputArchive, S3InputObjects
from falflow.submit.plan import JobIdentity, JobPlan, Planner, PlanRejectedError
from falflow.submit.request import JobRequest, RequestRejectedError, S3ObjectRef, parse_request
from falflow.submit.routes import Route, RouteTable
from falflow.submit.service import (
    SubmitConfig,
    SubmitOutcome,
    SubmitResult,
    SubmitRetryLaterError,
    SubmitService,
    classify_submit_error,
    job_webhook_url,
)
from falflow.submit.settings import SubmitSettings
from falflow.submit.sources import JobMessage, JobSource, ObjectCreated, message_job_id, object_job_id

__all__ = [
    "CheckedInputs",
    "InputArchive",
    "InputFiles",
    "InputObjects",
    "JobIdentity",
    "JobMessage",
    "JobPlan",
    "JobRequest",
    "JobSource",
    "ObjectCreated",
    "PlanRejectedError",
    "Planner",
    "RequestRejectedError",
    "Route",
    "RouteTable",
    "S3InputArchive",
    "S3InputObjects",
    "S3ObjectRef",
    "SubmitApp",
    "SubmitConfig",
    "SubmitOutcome",
    "SubmitResult",
    "SubmitRetryLaterError",
    "SubmitService",
    "SubmitSettings",
    "classify_submit_error",
    "job_webhook_url",
    "message_job_id",
    "object_job_id",
    "parse_request",
    "sources_from_body",
]
