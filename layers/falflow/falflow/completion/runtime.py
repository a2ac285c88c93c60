"""What the webhook and store handlers call: their dependencies, built once per container from
the environment (pydantic settings, boto3 clients from ``falflow.aws``), and the event shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.aws import aws_client
from falflow.completion.adapters import EventBridgePublisher, S3Inbox, S3OutputStore, SqsOutputsQueue
from falflow.completion.finalise import Finaliser
from falflow.completion.http_api import UnreadableBodyError, http_response, webhook_request
from falflow.completion.intake import CompletionIntake
from falflow.completion.media import MediaFetcher
from falflow.completion.messages import OutputsMessage
from falflow.completion.settings import IntakeSettings, StoreSettings, WebhookSettings
from falflow.completion.store import StoreOutcome, StoreWorker
from falflow.completion.webhook import WebhookReceiver, WebhookReply
from falflow.dead_letter import DeadLetterPolicy, with_dead_letter_reason
from falflow.fal.http import USER_AGENT
from falflow.fal.queue import FalQueueClient
from falflow.fal.webhook import JwksCache
from falflow.jobs import JobStore, utcnow
from falflow.secrets import fal_api_key
from falflow.settings import fal_settings

logger = Logger(child=True)
JWKS_TIMEOUT_S = 2.0


# ------------------------------------------------------------------------------------ webhook


def completion_intake(settings: IntakeSettings, jobs: JobStore | None = None) -> CompletionIntake:
    """The intake on the stack's table, inbox and outputs queue (webhook and reconciler alike)."""
    return CompletionIntake(
        jobs or settings.job_store(),
        S3Inbox(aws_client("s3"), settings.output_bucket),
        SqsOutputsQueue(aws_client("sqs"), settings.outputs_queue_url),
        handoff_grace=settings.handoff_grace,
    )


def build_webhook_receiver(settings: WebhookSettings | None = None) -> WebhookReceiver:
    """Once per cold start: settings validated, clients and the JWKS cache made."""
    settings = settings or WebhookSettings()
    # Short timeouts: even a fetch from both JWKS hosts must fit the function's 10 s, well inside
    # the 15 s fal waits for a reply.
    jwks_http = httpx.Client(
        timeout=httpx.Timeout(JWKS_TIMEOUT_S), headers={"User-Agent": USER_AGENT}, follow_redirects=False
    )
    jwks = JwksCache(
        fal_settings().jwks_urls, jwks_http, min_refetch_interval_s=settings.jwks_refetch_seconds
    )
    return WebhookReceiver(
        completion_intake(settings),
        jwks,
        tolerance_s=settings.webhook_tolerance_seconds,
        allowed_user_ids=settings.fal_webhook_user_ids,
    )


def handle_webhook_event(event: Mapping[str, Any], receiver: WebhookReceiver) -> dict[str, Any]:
    """An API Gateway HTTP API (v2) event in, its response out."""
    try:
        request = webhook_request(event)
    except UnreadableBodyError as error:
        return http_response(WebhookReply(400, {"message": str(error)}))
    return http_response(receiver.receive(request))


# -------------------------------------------------------------------------------------- store


def build_store_worker(settings: StoreSettings | None = None) -> StoreWorker:
    settings = settings or StoreSettings()
    jobs = settings.job_store()
    outputs = S3OutputStore(aws_client("s3"), settings.output_bucket)
    return StoreWorker(
        jobs,
        inbox=S3Inbox(aws_client("s3"), settings.output_bucket),
        outputs=outputs,
        media=MediaFetcher(settings.media_policy()),
        fal=FalQueueClient(fal_settings(), fal_api_key),
        finaliser=Finaliser(
            jobs, EventBridgePublisher(aws_client("events"), settings.event_bus_name), outputs.bucket
        ),
        limits=settings.copy_limits(),
        lease=settings.store_lease,
    )


class OutputsBatchHandler:
    """An SQS batch from the outputs queue: each record is one ``OutputsMessage``; a failing record
    is reported for retry (or dead-lettered with its reason on the last receive), the rest consumed."""

    def __init__(self, worker: StoreWorker, dead_letter: DeadLetterPolicy) -> None:
        self._worker = worker
        self._handle_record = with_dead_letter_reason(self._store, dead_letter, lambda: aws_client("sqs"))

    @classmethod
    def from_env(cls) -> OutputsBatchHandler:
        return cls(build_store_worker(), DeadLetterPolicy.from_env())

    def _store(self, record: SQSRecord) -> StoreOutcome:
        message = OutputsMessage.model_validate_json(record.body)
        outcome = self._worker.handle(message, utcnow())
        logger.info("outputs message handled", job_id=message.job_id, outcome=outcome.value)
        return outcome

    def __call__(self, event: Mapping[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        return process_partial_response(
            event=dict(event),
            record_handler=self._handle_record,
            # Failed records are reported, never the whole invocation: the rest of the batch is done.
            processor=BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False),
            context=context,
        )
