"""The intake message that makes the submit path plan a recorded job again: how the reconciler
re-drives an ACCEPTED job no submit holds, and how a released HELD job is sent (falflow.spend)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

from falflow.jobs.model import Job


def original_request(job: Job) -> str | None:
    """The intake message that makes the submit path plan this very job again.

    An S3 source becomes its ObjectCreated notification (bucket, key and version: the job id is
    derived from them); a queue message becomes a job message carrying the job's own id as its
    ``job_id`` and the request fields the record kept. None when it cannot be rebuilt exactly (an
    unversioned object, or an input kept outside the record).
    """
    if job.source_kind in ("s3_media", "s3_document"):
        parts = urlsplit(job.source)
        version = parse_qs(parts.query).get("versionId", [None])[0]
        if parts.scheme != "s3" or not version:
            return None
        record = {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": parts.netloc},
                "object": {"key": quote_plus(parts.path.removeprefix("/"), safe="/"), "versionId": version},
            },
        }
        return json.dumps({"Records": [record]})
    if job.input is None or job.model is None:
        return None
    message: dict[str, Any] = {
        "job_id": job.job_id,
        "model": job.model,
        "input": {k: v for k, v in job.input.items() if k not in job.files},
        "metadata": job.metadata,
        "priority": job.priority,
    }
    if job.files:
        message["files"] = job.files
    if job.start_timeout is not None:
        message["start_timeout"] = job.start_timeout
    if job.output_prefix is not None:
        message["output_prefix"] = job.output_prefix
    if job.batch is not None:
        message["batch"] = job.batch.model_dump()
    return json.dumps(message)
