"""Starting jobs the two ways other systems do: a job message on the intake queue, or a file drop.

The request is checked here with the submit function's own rules before anything is sent, and
the job id is worked out the way the submit function will (deterministic from the source), so
the caller can follow the job at once.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import ValidationError

from falflow.aws.s3 import S3ObjectRef
from falflow.submit.request import RequestRejectedError, validate_request
from falflow.submit.routes import RouteTable
from falflow.submit.sources import ObjectCreated, message_job_id, object_job_id
from falflow_tools.ops.target import OpsError, Target


@dataclass(frozen=True)
class Submitted:
    job_id: str
    via: Literal["sqs", "s3"]
    reference: str  # the SQS message id, or the s3:// URI of the dropped object

    def to_json(self) -> dict[str, str]:
        return {"job_id": self.job_id, "via": self.via, "reference": self.reference}


def job_message(
    model: str,
    input: dict[str, Any],  # the model's own field name, as in the message schema
    *,
    job_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
    priority: str | None = None,
    start_timeout: float | None = None,
    output_prefix: str | None = None,
) -> dict[str, Any]:
    """A job message with only the fields that are set (the schema forbids unknown ones)."""
    message: dict[str, Any] = {"model": model, "input": input}
    optional = {
        "job_id": job_id,
        "metadata": metadata,
        "files": files,
        "priority": priority,
        "start_timeout": start_timeout,
        "output_prefix": output_prefix,
    }
    message.update({k: v for k, v in optional.items() if v})
    return message


def refuse_existing(target: Target, job_id: str) -> None:
    """The submit function keeps the first job of an id and drops the rest quietly; a person who
    submits the same thing twice is told instead."""
    existing = target.job_store().get(job_id)
    if existing is not None:
        raise OpsError(
            f"job {job_id} already exists ({existing.state.value}); nothing was sent. "
            f"Give another --job-id for a new job, or `falflow jobs retry {job_id}` to run it again"
        )


def send_message(target: Target, message: dict[str, Any], *, refuse_duplicate: bool = False) -> Submitted:
    """Send a job message to the intake queue; refuse one the submit function would reject (and,
    with `refuse_duplicate`, one whose job already exists)."""
    try:
        request = validate_request(message)
    except RequestRejectedError as error:
        raise OpsError(str(error)) from error
    body = json.dumps(message)
    job_id = request.job_id or message_job_id(body, json.loads(body))
    if refuse_duplicate:
        refuse_existing(target, job_id)
    try:
        sent = target.sqs().send_message(QueueUrl=target.output("IntakeQueueUrl"), MessageBody=body)
    except ClientError as error:
        raise OpsError(f"cannot send to the intake queue: {error}") from error
    return Submitted(job_id=job_id, via="sqs", reference=sent["MessageId"])


def routes(target: Target) -> RouteTable:
    try:
        return RouteTable.model_validate_json(target.parameters.get("Routes") or "{}")
    except ValidationError as error:
        raise OpsError(f"the stack's Routes parameter is not a valid route table: {error}") from error


def drop_file(
    target: Target,
    data: bytes,
    *,
    key: str,
    content_type: str | None = None,
    check_route: bool = True,
    refuse_duplicate: bool = False,
) -> Submitted:
    """Put a file into the input bucket under `key`; its ObjectCreated event starts the job. (Each
    drop is a new object version, so only a job document's own job id can be a duplicate.)"""
    jobs_prefix = target.parameters.get("JobsPrefix") or "jobs/"
    document = key.startswith(jobs_prefix)
    if check_route and not document and routes(target).match(key) is None:
        known = ", ".join(routes(target).prefixes) or "none"
        raise OpsError(f"no route for {key!r}: drop under a routed prefix ({known}) or under {jobs_prefix!r}")
    if document:
        try:
            parsed = json.loads(data)
            request = validate_request(parsed if isinstance(parsed, dict) else {})
        except (ValueError, RequestRejectedError) as error:
            raise OpsError(f"{key} is not a valid job document: {error}") from error
        if refuse_duplicate and request.job_id:
            refuse_existing(target, request.job_id)
    bucket = target.output("InputBucketName")
    content_type = (
        content_type or mimetypes.guess_type(PurePosixPath(key).name)[0] or "application/octet-stream"
    )
    try:
        put = target.s3().put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except ClientError as error:
        raise OpsError(f"cannot write s3://{bucket}/{key}: {error}") from error
    ref = S3ObjectRef(bucket=bucket, key=key, version_id=put.get("VersionId"))
    job_id = object_job_id(ObjectCreated(object=ref, etag=put.get("ETag"), size=len(data)))
    if document and request.job_id:
        job_id = request.job_id  # a document's own job id wins, as the submit function decides
    return Submitted(job_id=job_id, via="s3", reference=ref.uri)
