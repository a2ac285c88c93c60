"""The reconcile function's entry: `ReconcileApp`, built once per cold start from the environment, runs
the reconciler once per scheduled invocation (the event's content does not matter)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.aws.clients import aws_client
from falflow.aws.dead_letter import SqsDeadLetterQueue
from falflow.aws.events import EventBridgePublisher
from falflow.aws.intake import SqsIntakeQueue
from falflow.batches.objects import S3Manifests, S3ResultObjects
from falflow.batches.results import BatchResults
from falflow.batches.resume import StalledFanOuts
from falflow.completion.messages import outputs_message_jobs
from falflow.fal.platform import FalPlatformClient
from falflow.fal.queue import FalQueueClient
from falflow.jobs import utcnow
from falflow.jobs.requests import JobRequests
from falflow.reconcile.dead_letters import DeadLetterSweep
from falflow.reconcile.receipts import EventReceipts
from falflow.reconcile.reconciler import ACTOR, Reconciler
from falflow.reconcile.settings import ReconcileSettings
from falflow.secrets import FalKeys
from falflow.spend.release import Releaser

metrics = Metrics()


def build_reconciler(settings: ReconcileSettings) -> Reconciler:
    """Once per cold start: clients, the fal queue client, the shared completion hand-off."""
    jobs = settings.job_store()
    keys = FalKeys(settings)
    fal = FalQueueClient(settings.fal, keys.api_key)
    history = FalPlatformClient(settings.fal, keys.api_key)
    return Reconciler(
        jobs,
        fal=fal,
        handoff=settings.completion_handoff(jobs),
        finaliser=settings.finaliser(jobs),
        intake_queue=SqsIntakeQueue(settings.intake_queue_url),
        policy=settings.policy(),
        requests=JobRequests(jobs, fal, history, actor=ACTOR),
    )


def build_dead_letter_sweep(settings: ReconcileSettings, reconciler: Reconciler) -> DeadLetterSweep:
    """Both DLQs; a message SQS moved from the outputs queue itself names its job in its body, and
    is handed back to the store if no store run started it."""

    def queue(name: str, url: str, jobs_of_body: Callable[[str], tuple[str, ...]]) -> SqsDeadLetterQueue:
        return SqsDeadLetterQueue(
            lambda: aws_client("sqs"),
            url,
            name=name,
            visibility_s=settings.dead_letter_sweep_visibility_seconds,
            jobs_of_body=jobs_of_body,
        )

    return DeadLetterSweep(
        settings.job_store(),
        [
            # An intake body alone does not tell its job for sure (a job document may name its own
            # id; a message may reuse another's): only the entries the submit dead-lettered are read.
            queue("intake", settings.intake_dlq_url, lambda body: ()),
            queue("outputs", settings.outputs_dlq_url, outputs_message_jobs),
        ],
        limit=settings.dead_letter_sweep_limit,
        actor=ACTOR,
        unstarted={"outputs": reconciler.hand_over_untaken},
    )


def build_releaser(settings: ReconcileSettings) -> Releaser | None:
    """Held jobs are released by each run where budgets are configured (a spend table)."""
    ledger = settings.spend_ledger()
    if ledger is None:
        return None
    return Releaser(
        store=settings.job_store(),
        ledger=ledger,
        announcer=settings.spend_announcer(ledger),
        intake=SqsIntakeQueue(settings.intake_queue_url),
        lock_probe_seconds=settings.fal_lock_probe_seconds,
    )


def build_batch_results(settings: ReconcileSettings) -> BatchResults | None:
    """Batches whose lines are all final are answered by each run (where there is a batches table)."""
    store = settings.batch_store()
    if store is None:
        return None
    s3 = aws_client("s3")
    return BatchResults(
        store,
        settings.job_store(),
        S3Manifests(s3),
        S3ResultObjects(s3, settings.output_bucket),
        events=EventBridgePublisher(aws_client("events"), settings.event_bus_name),
        output_bucket=settings.output_bucket,
    )


def build_stalled_fan_outs(settings: ReconcileSettings) -> StalledFanOuts | None:
    """Batches whose fan-out stalled are carried on by each run (where there is a batches table)."""
    store = settings.batch_store()
    if store is None:
        return None
    return StalledFanOuts(
        store,
        SqsIntakeQueue(settings.intake_queue_url),
        stall_after=timedelta(seconds=settings.batch_stall_seconds),
    )


def build_event_receipts(settings: ReconcileSettings) -> EventReceipts:
    return EventReceipts(
        settings.job_store(),
        lambda: aws_client("sqs"),
        settings.event_receipts_url,
        limit=settings.event_receipts_limit,
        visibility_s=settings.dead_letter_sweep_visibility_seconds,
    )


class ReconcileApp:
    def __init__(
        self,
        reconciler: Reconciler,
        sweep: DeadLetterSweep,
        reserve_seconds: float,
        receipts: EventReceipts,
        releaser: Releaser | None = None,
        *,
        batches: BatchResults | None = None,
        stalls: StalledFanOuts | None = None,
    ) -> None:
        self._reconciler = reconciler
        self._releaser = releaser
        self._batches = batches
        self._stalls = stalls
        self._sweep = sweep
        self._reserve_ms = reserve_seconds * 1000
        self._receipts = receipts

    @classmethod
    def from_environment(cls, settings: ReconcileSettings | None = None) -> ReconcileApp:
        """Once per cold start: settings validated, clients, the reconciler and the sweeps made."""
        settings = settings or ReconcileSettings()
        reconciler = build_reconciler(settings)
        return cls(
            reconciler,
            build_dead_letter_sweep(settings, reconciler),
            settings.reserve_seconds,
            build_event_receipts(settings),
            build_releaser(settings),
            batches=build_batch_results(settings),
            stalls=build_stalled_fan_outs(settings),
        )

    def handle(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        def time_left() -> float:
            return (context.get_remaining_time_in_millis() - self._reserve_ms) / 1000

        # Receipts first: an event that went out is marked before anything looks at its job.
        done: dict[str, Any] = dict(self._receipts.settle(utcnow(), ACTOR).as_dict())
        report = self._reconciler.run(utcnow(), time_left=time_left)
        for action, count in report.actions.items():
            name = "Reconcile" + action.value.title().replace("_", "")
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)
        if self._releaser is not None and not report.stopped_early:
            released = self._releaser.run(utcnow(), time_left=time_left)
            done.update({f"held_{k}": v for k, v in released.as_dict().items()})
        if self._batches is not None and not report.stopped_early:
            done.update(self._batches.finish_ready())
        if self._stalls is not None and not report.stopped_early:
            done.update(self._stalls.resume())
        if report.stopped_early or time_left() <= 0:
            return {**report.as_dict(), **done}  # the jobs come first; the next run sweeps
        # After the jobs: a job this run completed leaves its dead letters to be removed now.
        swept = self._sweep.sweep(utcnow())
        metrics.add_metric(
            name="ReconcileDeadLettersRemoved", unit=MetricUnit.Count, value=sum(swept.removed.values())
        )
        return {**report.as_dict(), **done, **swept.as_dict()}
