"""The store function's entry: `StoreApp`, built once per cold start from the environment, takes an
SQS batch from the outputs queue; each record is one `OutputsMessage`. A failing record is reported
for retry (or dead-lettered with its reason on the last receive, noted on the job's trail), the rest
consumed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow import fal
from falflow.aws.batch import RecordClock, visible_after
from falflow.aws.clients import aws_client
from falflow.aws.dead_letter import DeadLetterPolicy, with_dead_letter_reason
from falflow.aws.outputs import S3Inbox, S3OutputBucket
from falflow.completion.finalise import EventReceiptPendingError
from falflow.completion.messages import OutputsMessage
from falflow.fal.queue import FalQueueClient
from falflow.jobs import utcnow
from falflow.secrets import FalKeys
from falflow.store.media import SIGNED_URL_SECONDS, MediaFetcher
from falflow.store.settings import StoreSettings
from falflow.store.worker import StoreOutcome, StoreWorker

if TYPE_CHECKING:
    from falflow.fal.platform import FalPlatformClient, PayloadDeletion

logger = Logger(child=True)


def _platform_on_first_use(
    settings: StoreSettings, key: Callable[[], str]
) -> Callable[[], FalPlatformClient]:
    # Signing a private file and deleting payloads are the store's only Platform API calls, and
    # rare: the platform client (fal's largest module) is loaded then, not at every cold start.
    @cache
    def client() -> FalPlatformClient:
        return fal.FalPlatformClient(settings.fal, key)

    return client


class _PayloadsOnFirstUse:
    def __init__(self, client: Callable[[], FalPlatformClient]) -> None:
        self._client = client

    def delete_request_payloads(self, request_id: str, *, idempotency_key: str) -> PayloadDeletion:
        return self._client().delete_request_payloads(request_id, idempotency_key=idempotency_key)


def build_store_worker(settings: StoreSettings) -> StoreWorker:
    jobs = settings.job_store()
    outputs = S3OutputBucket(aws_client("s3"), settings.output_bucket)
    keys = FalKeys(settings)
    files = _platform_on_first_use(settings, keys.api_key)
    return StoreWorker(
        jobs,
        inbox=S3Inbox(aws_client("s3"), settings.output_bucket),
        outputs=outputs,
        media=MediaFetcher(
            settings.media_policy(),
            signer=lambda url: files().sign_file_url(url, expiration_seconds=SIGNED_URL_SECONDS),
        ),
        fal=FalQueueClient(settings.fal, keys.api_key),
        finaliser=settings.finaliser(jobs),
        limits=settings.copy_limits(),
        lease=settings.store_lease,
        payloads=(
            _PayloadsOnFirstUse(_platform_on_first_use(settings, keys.admin_key))
            if keys.has_admin_key
            else None
        ),
    )


class StoreApp:
    def __init__(self, worker: StoreWorker, dead_letter: DeadLetterPolicy) -> None:
        self.worker = worker
        self._dead_letter = dead_letter
        self._handle_record = with_dead_letter_reason(
            self._store,
            dead_letter,
            lambda: aws_client("sqs"),
            on_dead_letter=self._dead_lettered,
            path="store",
        )

    @classmethod
    def from_environment(cls, settings: StoreSettings | None = None) -> StoreApp:
        """Once per cold start: settings validated, clients and the worker made."""
        settings = settings or StoreSettings()
        return cls(build_store_worker(settings), settings.dead_letter_policy())

    def _store(self, record: SQSRecord) -> StoreOutcome:
        message = OutputsMessage.model_validate_json(record.body)
        now = utcnow()
        try:
            outcome = self.worker.handle(message, now, last_attempt=self._dead_letter.is_last_attempt(record))
        except EventReceiptPendingError as pending:
            # Back when the claim runs out: published by then (its receipt marked it) or free to publish.
            visible_after(aws_client("sqs"), record, (pending.until - now).total_seconds())
            raise
        logger.info("outputs message handled", job_id=message.job_id, outcome=outcome.value)
        return outcome

    def _dead_lettered(self, record: SQSRecord, error: BaseException) -> None:
        """The job stays STORING; its trail says why and where its message waits."""
        try:
            message = OutputsMessage.model_validate_json(record.body)
        except ValueError:
            return  # not an outputs message: no job to note it on
        self.worker.note_dead_lettered(message.job_id, f"{type(error).__name__}: {error}", utcnow())

    def handle(self, event: Mapping[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        clock = RecordClock(context)
        return process_partial_response(
            event=dict(event),
            # A record is started only if the invocation has time to finish it (falflow.aws.batch).
            record_handler=clock.timed(self._handle_record, lambda: aws_client("sqs")),
            # Failed records are reported, never the whole invocation: the rest of the batch is done.
            processor=BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False),
            context=context,
        )
