"""The submit function's entry: `SubmitApp`, built once per cold start from the environment, takes the
intake queue's SQS batch and answers with partial batch failures.

Everything that knows a Lambda event lives here. An SQS record's body is an S3 event notification
(one source per ObjectCreated record, the key URL-decoded), S3's ``s3:TestEvent`` (ignored), or a
job message from another service. The records of a batch are submitted concurrently, so a batch of
ten costs about one fal round trip; a record to retry is reported in ``batchItemFailures``, and on
its last receive goes to the DLQ with its reason
(docs/adr/0010-messages-are-dead-lettered-with-their-reason.md).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.config import Config
from pydantic import ConfigDict, Field, ValidationError

from falflow.aws.batch import visible_after
from falflow.aws.clients import aws_client
from falflow.aws.dead_letter import DeadLetterPolicy, with_dead_letter_reason
from falflow.aws.dead_letter import dead_letter as send_to_dead_letter
from falflow.aws.s3 import S3ObjectRef
from falflow.catalogue import DynamoModelCatalogue
from falflow.deferred import DeferredModel
from falflow.failures import report_failure
from falflow.fal.http import build_http_client
from falflow.fal.platform import FalPlatformClient
from falflow.fal.queue import FalQueueClient
from falflow.fal.storage import FalStorageClient
from falflow.jobs import JobStore, TrailEntry, isoformat, utcnow
from falflow.secrets import FalKeys
from falflow.spend.estimate import CostEstimator
from falflow.submit.batches.fanout import BatchRefusedError, BatchStep
from falflow.submit.batches.intake import BatchIntake, CancelledBatches
from falflow.submit.files import InputFiles
from falflow.submit.objects import S3InputArchive, S3InputObjects
from falflow.submit.plan import Planner
from falflow.submit.service import (
    ACTOR,
    JOB_ID_CONFLICT,
    SubmitConfig,
    SubmitOutcome,
    SubmitResult,
    SubmitRetryLaterError,
    SubmitService,
)
from falflow.submit.settings import SubmitSettings
from falflow.submit.sources import JobMessage, JobSource, ObjectCreated
from falflow.webhook.token import webhook_tokens

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = Logger(child=True)
# The longest a message fal did not take waits before it is tried again.
MAX_RETRY_BACKOFF_S = 900.0
metrics = Metrics()

S3_TEST_EVENT: Final = "s3:TestEvent"
_OBJECT_CREATED: Final = "ObjectCreated:"

# One metric per outcome, counted once per job (duplicates are counted apart).
_OUTCOME_METRICS: Final = {
    SubmitOutcome.SUBMITTED: "JobsSubmitted",
    SubmitOutcome.REJECTED: "JobsRejected",
    SubmitOutcome.FAILED: "JobsFailed",
    SubmitOutcome.DUPLICATE: "DuplicateDeliveries",
    SubmitOutcome.SUPERSEDED: "DuplicateRequestsCancelled",
    SubmitOutcome.FOUND: "SubmissionsFoundInHistory",
    SubmitOutcome.IGNORED: "IgnoredObjects",
    SubmitOutcome.CONFLICT: "JobIdConflicts",
    SubmitOutcome.HELD: "JobsHeld",
    SubmitOutcome.CANCELLED: "JobsCancelled",
}


# ------------------------------------------------------------------------------ event parsing


class _S3Bucket(DeferredModel):
    name: str


class _S3Object(DeferredModel):
    key: str
    size: int | None = None
    etag: str | None = Field(default=None, alias="eTag")
    version_id: str | None = Field(default=None, alias="versionId")


class _S3Entity(DeferredModel):
    bucket: _S3Bucket
    object: _S3Object


class _S3Record(DeferredModel):
    event_source: str = Field(alias="eventSource")
    event_name: str = Field(alias="eventName")
    s3: _S3Entity


class _S3Notification(DeferredModel):
    model_config = ConfigDict(extra="ignore")

    records: list[_S3Record] = Field(alias="Records", min_length=1)


class _S3TestEvent(DeferredModel):
    event: str = Field(alias="Event")
    service: str = Field(alias="Service")


def sources_from_body(body: str, *, message_id: str) -> list[JobSource]:
    """The job sources one intake message carries (none for S3's test event)."""
    notification = _s3_notification(body)
    if notification is None:
        return [JobMessage(body=body, message_id=message_id)]
    sources: list[JobSource] = []
    for record in notification.records:
        if not record.event_name.startswith(_OBJECT_CREATED):
            logger.info("S3 event ignored: not an object creation", event_name=record.event_name)
            continue
        obj = record.s3.object
        sources.append(
            ObjectCreated(
                object=S3ObjectRef(
                    bucket=record.s3.bucket.name,
                    key=unquote_plus(obj.key),
                    version_id=obj.version_id or None,
                ),
                etag=obj.etag,
                size=obj.size,
            )
        )
    return sources


def _s3_notification(body: str) -> _S3Notification | None:
    """The S3 notification in ``body``; an empty one for the test event; None for anything else."""
    if '"Records"' not in body and S3_TEST_EVENT not in body:
        return None  # a job message: its parsing (and its errors) are the domain's
    try:
        notification = _S3Notification.model_validate_json(body)
    except ValidationError:
        return _S3Notification.model_construct(records=[]) if _is_test_event(body) else None
    if not all(record.event_source == "aws:s3" for record in notification.records):
        return None
    return notification


def _is_test_event(body: str) -> bool:
    try:
        test = _S3TestEvent.model_validate_json(body)
    except ValidationError:
        return False
    if test.event != S3_TEST_EVENT or test.service != "Amazon S3":
        return False
    logger.info("S3 test event ignored")
    return True


# --------------------------------------------------------------------------------- the batch


class SubmitApp:
    """What a submit function container holds: settings, clients and the service, built once."""

    def __init__(
        self,
        service: SubmitService,
        *,
        store: JobStore,
        dead_letter: DeadLetterPolicy,
        concurrency: int,
        sqs: Callable[[], SQSClient] = lambda: aws_client("sqs"),
        batches: BatchIntake | None = None,
        log_keys: Logger | None = None,
        retry_base_s: float = 30.0,
    ) -> None:
        self._service = service
        self._store = store
        self._dead_letter = dead_letter
        self._sqs = sqs
        self._batches = batches
        self._retry_base_s = retry_base_s
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="submit")
        self._handle_record = with_dead_letter_reason(
            self._submit_record, dead_letter, sqs, on_dead_letter=self._dead_lettered, path="submit"
        )
        # A Logger of the function's own service (not a child): it may set per-thread keys.
        self._keys = log_keys or Logger()

    @classmethod
    def from_environment(cls, settings: SubmitSettings | None = None) -> SubmitApp:
        """Cold start: validate the configuration and build every client once."""
        settings = settings or SubmitSettings()  # every field read from the environment
        log_keys = Logger()
        keys = FalKeys(settings)
        http = build_http_client(settings.fal)
        dynamodb = aws_client("dynamodb")
        s3 = aws_client("s3")
        store = settings.job_store()
        objects = S3InputObjects(s3, _presigning_client())
        platform = FalPlatformClient(settings.fal, keys.api_key, http)
        estimator = CostEstimator(dynamodb=dynamodb, usage_table=settings.usage_table, fal=platform)
        batches = settings.batch_store()
        service = SubmitService(
            store=store,
            fal=FalQueueClient(settings.fal, keys.api_key, http),
            planner=Planner(
                settings.routes, settings.jobs_prefix, objects, input_buckets=[settings.input_bucket]
            ),
            files=InputFiles(
                objects,
                FalStorageClient(settings.fal, keys.api_key, http),
                input_bucket=settings.input_bucket,
                presign_expiry_seconds=settings.presign_expiry_seconds,
            ),
            config=SubmitConfig(
                webhook_url=settings.webhook_url,
                ambiguous_grace=settings.ambiguous_grace,
                worker_lease=settings.worker_lease,
                max_inline_input_bytes=settings.max_inline_input_bytes,
                fal_defaults=settings.fal_defaults(),
            ),
            tokens=webhook_tokens(settings),
            archive=S3InputArchive(s3, settings.output_bucket) if settings.output_bucket else None,
            catalogue=DynamoModelCatalogue(dynamodb, settings.usage_table) if settings.usage_table else None,
            history=platform,
            estimator=estimator,
            gate=settings.spend_gate(store),
            batch_cancelled=CancelledBatches(batches) if batches else None,
            correlate=correlate_logs(log_keys),
        )
        return cls(
            service,
            store=store,
            dead_letter=settings.dead_letter_policy(),
            concurrency=settings.submit_concurrency,
            batches=settings.batch_intake(
                batches, s3, estimator, input_bucket=settings.input_bucket, submit_lease=settings.worker_lease
            ),
            log_keys=log_keys,
            retry_base_s=settings.submit_retry_base_seconds,
        )

    def handle(
        self, event: dict[str, Any], context: LambdaContext | None = None
    ) -> PartialItemFailureResponse:
        """Submit every record of an SQS batch; report the ones to retry."""
        processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return async_process_partial_response(
            event=event, record_handler=self._record_handler, processor=processor, context=context
        )

    async def _record_handler(self, record: SQSRecord) -> list[SubmitResult | BatchStep] | None:
        # Each record runs on its own thread in a copy of the context, so per-record log keys
        # (the correlation id) never leak between concurrent records.
        metrics.add_metric(name="IntakeMessages", unit=MetricUnit.Count, value=1)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        try:
            results = await loop.run_in_executor(self._executor, context.run, self._handle_record, record)
        except SubmitRetryLaterError as retry:
            metrics.add_metric(
                name="SubmitAmbiguous" if retry.ambiguous else "SubmitRetries", unit=MetricUnit.Count, value=1
            )
            raise
        except Exception:
            metrics.add_metric(name="SubmitErrors", unit=MetricUnit.Count, value=1)
            raise
        # Metrics are added here, on the event loop's thread, never from the workers (a dead letter
        # is counted by `with_dead_letter_reason`, as its own EMF record).
        for result in results or []:
            _count(result)
        return results

    def _submit_record(self, record: SQSRecord) -> list[SubmitResult | BatchStep]:
        self._keys.thread_safe_append_keys(message_id=record.message_id)
        results: list[SubmitResult] = []
        steps: list[BatchStep] = []
        retries: list[SubmitRetryLaterError] = []
        for source in sources_from_body(record.body, message_id=record.message_id):
            try:
                step = self._batch_step(record, source)
                if step is not None:
                    steps.append(step)
                    continue
                results.append(self._service.submit_job(source))
            except SubmitRetryLaterError as retry:
                # The record's one WARNING is `with_dead_letter_reason`'s; this says which job.
                logger.info("job goes back to the queue", reason=retry.reason, ambiguous=retry.ambiguous)
                retries.append(retry)
        if retries and not self._left_to_job_records(record, retries):
            if not self._dead_letter.is_last_attempt(record):  # the last one goes to the DLQ
                self._back_when_due(record, retries)
            raise _for_the_whole_message(retries, results)
        conflicts = [result for result in results if result.outcome is SubmitOutcome.CONFLICT]
        if conflicts:
            # Can never succeed, so no retries: into the DLQ now, with the reason, and consumed.
            reasons = "; ".join(result.error.message for result in conflicts if result.error)
            send_to_dead_letter(self._sqs(), self._dead_letter, record, JOB_ID_CONFLICT, reasons)
            for conflict in conflicts:
                report_failure(
                    "submit",
                    (JOB_ID_CONFLICT, conflict.error.message if conflict.error else "-"),
                    job_id=conflict.job_id,
                    dead_lettered=True,
                    message_id=record.message_id,
                )
        return [*results, *steps]

    def _batch_step(self, record: SQSRecord, source: JobSource) -> BatchStep | None:
        """Run the batch step `source` is (None: it is a job's); a batch message that can never run
        goes to the DLQ with its reason now, consumed."""
        if self._batches is None:
            return None
        try:
            return self._batches.step(source)
        except BatchRefusedError as refused:
            send_to_dead_letter(self._sqs(), self._dead_letter, record, refused.reason, str(refused))
            report_failure(
                "submit",
                (refused.reason, str(refused)),
                job_id=None,
                dead_lettered=True,
                message_id=record.message_id,
            )
            return BatchStep(name="-", action="refused")

    def _back_when_due(self, record: SQSRecord, retries: list[SubmitRetryLaterError]) -> None:
        """The message comes back when its jobs can be tried again, not after the queue's visibility
        timeout: when their holds end (a lease, the grace after a lost reply), or, for a job fal
        did not take, after a backoff that doubles with each receive."""
        now = utcnow()
        receives = int(record.attributes.approximate_receive_count or 1)
        backoff = timedelta(seconds=min(MAX_RETRY_BACKOFF_S, self._retry_base_s * 2 ** (receives - 1)))
        latest = max(retry.not_before or now + backoff for retry in retries)
        visible_after(self._sqs(), record, (latest - now).total_seconds())

    def _left_to_job_records(self, record: SQSRecord, retries: list[SubmitRetryLaterError]) -> bool:
        """On a message's last receive, consume it instead of dead-lettering it when every job it
        still waits for is held by its own record (a live submit lease: fal's webhook binds it, or
        the reconciler re-drives the job once the lease expires), so no message of a job that will
        complete is left in the DLQ to trip its alarm. The job's trail says so."""
        if not self._dead_letter.is_last_attempt(record) or not all(retry.held for retry in retries):
            return False
        for retry in retries:
            self._store.add_trail(
                retry.job_id,
                TrailEntry(
                    at=isoformat(utcnow()),
                    actor=ACTOR,
                    action="message_consumed",
                    reason=f"message {record.message_id} was on its last receive while {retry.reason}; "
                    "the job's record holds it: its webhook or the reconciler's re-drive finishes it",
                ),
            )
        logger.info("last receive of a message whose jobs their records hold: consumed", jobs=len(retries))
        return True

    def _dead_lettered(self, record: SQSRecord, error: BaseException) -> None:
        if isinstance(error, SubmitRetryLaterError):
            self._store.add_trail(
                error.job_id,
                TrailEntry(at=isoformat(utcnow()), actor=ACTOR, action="dead_lettered", reason=error.reason),
            )


def _for_the_whole_message(
    retries: list[SubmitRetryLaterError], results: list[SubmitResult]
) -> SubmitRetryLaterError:
    """The retry that sends the message back: the first (the message carries them all; the others
    are redone as duplicates), naming every job of the message but one whose id it reused, so that
    a DLQ entry of it is removed only once they all completed (falflow.reconcile.dead_letters)."""
    first = retries[0]
    mine = [r.job_id for r in results if r.job_id and r.outcome is not SubmitOutcome.CONFLICT]
    first.job_ids = tuple(dict.fromkeys([*mine, *(r.job_id for r in retries)]))
    return first


def correlate_logs(log_keys: Logger) -> Callable[[str], None]:
    """Make a job id the correlation id of the current record's logs (they run on a context of
    their own, so concurrent records never see each other's)."""

    def correlate(job_id: str) -> None:
        log_keys.thread_safe_append_keys(correlation_id=job_id, job_id=job_id)

    return correlate


def _count(result: SubmitResult | BatchStep) -> None:
    if isinstance(result, BatchStep):
        metrics.add_metric(name="BatchLinesSent", unit=MetricUnit.Count, value=result.sent)
        return
    if result.created and result.outcome is not SubmitOutcome.REJECTED:
        metrics.add_metric(name="JobsAccepted", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=_OUTCOME_METRICS[result.outcome], unit=MetricUnit.Count, value=1)
    if result.fal_latency_s is not None:
        metrics.add_metric(
            name="SubmitLatency", unit=MetricUnit.Milliseconds, value=result.fal_latency_s * 1000
        )


def _presigning_client() -> S3Client:
    """S3 client for presigning: SigV4 (boto3 would sign SigV2 for us-east-1's global endpoint)."""
    client: S3Client = aws_client.session().client(
        "s3", config=Config(signature_version="s3v4", s3={"addressing_style": "auto"})
    )
    return client
