"""Jobs sent to the fal emulator the way the submit path sends them, and their deliveries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from falflow.fal.queue import FalQueueClient, Submission
from falflow.jobs import Job, RequestUrls, utcnow
from falflow.settings import FalSettings
from falflow_tools.emulator import RunningEmulator
from tests.fixtures.completion import CompletionStack

MODELS: dict[str, dict[str, Any]] = {
    "fal-ai/flux/dev": {"prompt": "a lighthouse", "num_images": 2, "image_size": "square"},
    "fal-ai/kling-video/v2/master/text-to-video": {"prompt": "waves", "duration": "5"},
    "fal-ai/stable-audio": {"prompt": "rain", "seconds_total": 2},
}
EXPECTED_OUTPUTS = {
    "fal-ai/flux/dev": 2,
    "fal-ai/kling-video/v2/master/text-to-video": 1,
    "fal-ai/stable-audio": 1,
}


@dataclass
class SentJob:
    job_id: str
    model: str
    submission: Submission


def fal_queue(fal: RunningEmulator) -> FalQueueClient:
    return FalQueueClient(FalSettings(queue_url=fal.urls.queue_url), lambda: fal.api_key)


def accept(stack: CompletionStack, job_id: str, model: str, **fields: Any) -> Job:
    """The submit path's first write: the job exists (ACCEPTED) before fal hears of it."""
    job, _ = stack.jobs.create(
        Job.new(
            job_id,
            source=f"sqs:{job_id}",
            source_kind="sqs",
            now=utcnow(),
            model=model,
            metadata={"caller_ref": job_id},
            **fields,
        )
    )
    return job


def send(
    stack: CompletionStack,
    fal: RunningEmulator,
    job_id: str,
    model: str,
    model_input: dict[str, Any],
    *,
    webhook_base: str | None,
    store_io: bool | None = None,
) -> SentJob:
    accept(stack, job_id, model)
    webhook = f"{webhook_base}?{urlencode({'job_id': job_id})}" if webhook_base else None
    submission = fal_queue(fal).submit(model, model_input, webhook_url=webhook, store_io=store_io)
    return SentJob(job_id, model, submission)


def submit_write(stack: CompletionStack, sent: SentJob) -> None:
    """The submit path's second write: fal's request id and URLs, then SUBMITTED (a no-op when a
    completion was already recorded)."""
    submission = sent.submission
    stack.jobs.bind_request(
        sent.job_id,
        submission.request_id,
        urls=RequestUrls(
            status_url=submission.status_url,
            response_url=submission.response_url,
            cancel_url=submission.cancel_url,
        ),
    )
    stack.jobs.confirm_submission(sent.job_id, submission.request_id, now=utcnow())


def cdn_downloads(fal: RunningEmulator) -> Counter[str]:
    """How often each output file was downloaded from the emulator's CDN."""
    return Counter(
        r.path for r in fal.control.requests() if r.method == "GET" and r.path.startswith("/cdn/files/")
    )
