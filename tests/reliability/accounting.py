"""The accounting of a run, read from ground truth rather than from what falflow says of itself:
the jobs table (DynamoDB), the output bucket (S3), the events that reached the bus, and the
emulator's own record of every request fal received and every file its CDN served.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from rich.console import Console
from rich.table import Table

from falflow.aws.dead_letter import JOB_IDS_ATTRIBUTE
from falflow.completion.finalise import ANNOUNCED_STATES
from falflow.completion.messages import outputs_message_jobs
from falflow.jobs import FINAL_STATES, Job, JobState
from falflow.jobs.store import REQUEST_CLAIM_PREFIX, job_from_item
from falflow.submit.app import sources_from_body
from falflow.submit.sources import JobMessage, message_job_id, object_job_id
from falflow_tools.emulator import JobView
from falflow_tools.emulator.state import ServedFile
from falflow_tools.local.stack import LocalStack

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

COMPLETION_EVENTS = ("Job Completed", "Job Failed")
DEAD_LETTER_QUEUES = ("IntakeDLQ", "OutputsDLQ")
# A dead letter of a job in one of these states is no longer needed (ADR 0019).
DONE_STATES = (JobState.COMPLETED, JobState.CANCELLED)


def scan_jobs(dynamodb: DynamoDBClient, table: str) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            if item["job_id"]["S"].startswith(REQUEST_CLAIM_PREFIX):
                continue  # a fal request's claim on its job, not a job
            job = job_from_item(item)
            jobs[job.job_id] = job
    return jobs


def scan_settled(dynamodb: DynamoDBClient, table: str) -> set[str]:
    """The jobs that are final and, if their end is announced, announced: only each job's state and
    event mark are read (the settling loop reads them every few seconds, and moto's cost grows with
    what it serialises: a whole item carries its trail)."""
    settled: set[str] = set()
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table,
        ConsistentRead=True,
        ProjectionExpression="job_id, #s, event_published_at",
        ExpressionAttributeNames={"#s": "state"},
    )
    for page in pages:
        for item in page["Items"]:
            if "state" not in item or item["job_id"]["S"].startswith(REQUEST_CLAIM_PREFIX):
                continue
            state = JobState(item["state"]["S"])
            announced = state not in ANNOUNCED_STATES or "event_published_at" in item
            if state in FINAL_STATES and announced:
                settled.add(item["job_id"]["S"])
    return settled


def fal_job_id(fal_job: JobView) -> str | None:
    """The falflow job a fal request was submitted for: the `job_id` of its webhook URL."""
    if not fal_job.webhook_url:
        return None
    values = parse_qs(urlsplit(fal_job.webhook_url).query).get("job_id")
    return values[0] if values else None


def drain_events(stack: LocalStack) -> list[dict[str, object]]:
    """Every event the bus delivered to the local tap queue (the tap is this run's only reader)."""
    assert stack.events_queue is not None
    sqs, url = stack.sqs(), stack.events_queue.url
    events: list[dict[str, object]] = []
    empty_receives = 0
    while empty_receives < 2:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=300
        ).get("Messages", [])
        empty_receives = 0 if messages else empty_receives + 1
        for message in messages:
            events.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return events


def _waiting_reason(job: Job) -> str:
    """What a person sees on a job that is not final: its error, else its last trail entry."""
    if job.error is not None:
        return f"{job.error.type}: {job.error.message}"
    if job.trail:
        last = job.trail[-1]
        return f"{last.action}: {last.reason}".rstrip(": ")
    return ""


@dataclass
class Accounting:
    """What a run left behind, job by job, and every way it breaks the promise."""

    sent: int
    states: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    unexpected_records: list[str] = field(default_factory=list)
    fal_submissions: int = 0
    unsubmitted: list[str] = field(default_factory=list)
    doubly_submitted: dict[str, int] = field(default_factory=dict)
    outputs_served: int = 0
    outputs_stored: int = 0
    outputs_missing: list[str] = field(default_factory=list)
    outputs_extra: list[str] = field(default_factory=list)
    outputs_differing: list[str] = field(default_factory=list)
    events: int = 0
    jobs_without_event: list[str] = field(default_factory=list)
    jobs_with_extra_events: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    # Dead letters (queue/message id) whose jobs all completed or were cancelled: none may stay.
    dead_letters_of_done_jobs: list[str] = field(default_factory=list)
    # Messages still on a queue or in a dead-letter queue when the run ended (SQS's own count).
    left_on_queues: dict[str, int] = field(default_factory=dict)
    stuck: dict[str, str] = field(default_factory=dict)
    injected: Counter[str] = field(default_factory=Counter)

    def problems(self) -> list[str]:
        checks = {
            "jobs lost (sent, no record)": self.lost,
            "records of jobs nobody sent": self.unexpected_records,
            "jobs never submitted to fal": self.unsubmitted,
            "jobs submitted to fal more than once": sorted(self.doubly_submitted),
            "outputs fal served that were not stored": self.outputs_missing,
            "stored objects fal never served for that job (doubled or foreign)": self.outputs_extra,
            "stored outputs not byte-identical to what fal served": self.outputs_differing,
            "final jobs without a completion event": self.jobs_without_event,
            "jobs with more than one completion event": sorted(self.jobs_with_extra_events),
            "jobs not final and with no visible reason": sorted(self.stuck),
            "dead letters of jobs that completed": self.dead_letters_of_done_jobs,
        }
        problems = [f"{what}: {len(ids)} ({', '.join(ids[:5])})" for what, ids in checks.items() if ids]
        if self.fal_submissions != self.sent - self.states.get(JobState.REJECTED, 0):
            problems.append(f"fal submissions {self.fal_submissions} != jobs {self.sent}")
        return problems

    def table(self, title: str) -> Table:
        table = Table(title=title, title_justify="left")
        table.add_column("accounting (ground truth)")
        table.add_column("count", justify="right")
        doubled_extra = sum(n - 1 for n in self.doubly_submitted.values())
        outputs = (len(self.outputs_missing), len(self.outputs_extra), len(self.outputs_differing))
        events = (len(self.jobs_without_event), len(self.jobs_with_extra_events))
        rows: list[tuple[str, object]] = [
            ("jobs sent", self.sent),
            *((f"  {state}", n) for state, n in sorted(self.states.items())),
            ("  not final, waiting with a reason", len(self.waiting)),
            ("  not final, no reason (stuck)", len(self.stuck)),
            ("lost (sent, no record)", len(self.lost)),
            ("fal submissions (emulator's record)", self.fal_submissions),
            ("  jobs submitted more than once (extra)", f"{len(self.doubly_submitted)} (+{doubled_extra})"),
            ("  jobs never submitted", len(self.unsubmitted)),
            ("outputs fal served for bound requests", self.outputs_served),
            ("outputs stored", self.outputs_stored),
            ("  missing / extra / not byte-identical", " / ".join(map(str, outputs))),
            ("completion events", self.events),
            ("  final jobs with no event / with more than one", " / ".join(map(str, events))),
            *((f"messages left on {queue}", n) for queue, n in self.left_on_queues.items()),
            ("  dead letters of jobs that completed", len(self.dead_letters_of_done_jobs)),
            *((f"injected: {what}", n) for what, n in sorted(self.injected.items())),
        ]
        for label, value in rows:
            table.add_row(label, str(value))
        return table

    def print(self, title: str, console: Console | None = None) -> None:
        (console or Console()).print(self.table(title))
        for problem in self.problems():
            (console or Console()).print(f"[red]FAIL[/red] {problem}")


def injected_faults(stack: LocalStack) -> Counter[str]:
    """What the emulator did wrong on purpose, from its own request and delivery records."""
    assert stack.emulator is not None
    control = stack.emulator.control
    injected: Counter[str] = Counter()
    for request in control.requests():
        if request.fault is not None:
            injected[f"{request.group} {request.fault}"] += 1
    for attempt in control.webhooks():
        if attempt.outcome == "dropped":
            injected["webhook dropped"] += 1
        elif attempt.delivery == "duplicate" and attempt.attempt == 1:
            injected["webhook duplicated"] += 1
    return injected


def account(stack: LocalStack, job_ids: Iterable[str], *, injected: Counter[str]) -> Accounting:
    expected = list(job_ids)
    assert stack.emulator is not None
    control = stack.emulator.control
    outputs = stack.outputs()
    jobs = scan_jobs(stack.dynamodb(), outputs["JobsTableName"])
    accounting = Accounting(sent=len(expected), injected=injected)

    accounting.lost = [job_id for job_id in expected if job_id not in jobs]
    accounting.unexpected_records = sorted(set(jobs) - set(expected))
    for job_id in expected:
        job = jobs.get(job_id)
        if job is None:
            continue
        accounting.states[job.state] += 1
        if job.state not in FINAL_STATES:
            reason = _waiting_reason(job)
            (accounting.waiting if reason else accounting.stuck)[job_id] = reason or job.state

    sqs = stack.sqs()
    for queue in ("IntakeQueue", "IntakeDLQ", "OutputsQueue", "OutputsDLQ"):
        attributes = sqs.get_queue_attributes(
            QueueUrl=outputs[f"{queue}Url"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        accounting.left_on_queues[queue] = sum(int(n) for n in attributes.values())
    _account_dead_letters(accounting, stack, jobs)
    _account_submissions(accounting, expected, jobs, control.jobs())
    _account_outputs(accounting, stack, expected, jobs, control.served_files())
    _account_events(accounting, expected, jobs, drain_events(stack))
    return accounting


def _account_dead_letters(accounting: Accounting, stack: LocalStack, jobs: dict[str, Job]) -> None:
    """Every message in a DLQ, read (and left there), against the jobs it was for."""
    sqs, outputs = stack.sqs(), stack.outputs()
    for queue in DEAD_LETTER_QUEUES:
        url, seen = outputs[f"{queue}Url"], set[str]()
        while messages := sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for message in messages:
                if message["MessageId"] in seen:
                    continue
                seen.add(message["MessageId"])
                job_ids = dead_letter_jobs(message["Body"], message.get("MessageAttributes", {}))
                if job_ids and all(j in jobs and jobs[j].state in DONE_STATES for j in job_ids):
                    accounting.dead_letters_of_done_jobs.append(f"{queue}/{message['MessageId']}")


def dead_letter_jobs(body: str, attributes: dict[str, Any]) -> tuple[str, ...]:
    """The jobs a dead letter was for: those falflow named on it, else those its body maps to as
    the submit or store maps it (a message SQS moved itself carries only its body)."""
    named = attributes.get(JOB_IDS_ATTRIBUTE, {}).get("StringValue")
    if named:
        return tuple(json.loads(named))
    if jobs := outputs_message_jobs(body):
        return jobs
    ids = []
    for source in sources_from_body(body, message_id="dead-letter"):
        if isinstance(source, JobMessage):
            try:
                parsed = json.loads(body)
            except ValueError:
                return ()
            explicit = parsed.get("job_id") if isinstance(parsed, dict) else None
            ids.append(explicit if isinstance(explicit, str) else message_job_id(body, parsed))
        else:
            ids.append(object_job_id(source))
    return tuple(ids)


def _account_submissions(
    accounting: Accounting, expected: list[str], jobs: dict[str, Job], fal_jobs: list[JobView]
) -> None:
    per_job = Counter(fal_job_id(fal_job) for fal_job in fal_jobs)
    accounting.fal_submissions = len(fal_jobs)
    for job_id in expected:
        job = jobs.get(job_id)
        if job is not None and job.state is JobState.REJECTED:
            continue
        if per_job[job_id] == 0:
            accounting.unsubmitted.append(job_id)
        elif per_job[job_id] > 1:
            accounting.doubly_submitted[job_id] = per_job[job_id]


def _account_outputs(
    accounting: Accounting,
    stack: LocalStack,
    expected: list[str],
    jobs: dict[str, Job],
    served: list[ServedFile],
) -> None:
    """Each completed job's stored objects against the files fal served for its bound request."""
    served_by_request: dict[str, list[ServedFile]] = defaultdict(list)
    for served_file in served:
        served_by_request[served_file.request_id].append(served_file)
    s3, bucket = stack.s3(), stack.outputs()["OutputBucketName"]
    stored_by_job: dict[str, list[str]] = defaultdict(list)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="outputs/"):
        for obj in page.get("Contents", []):
            job_id = obj["Key"].split("/")[-2]
            stored_by_job[job_id].append(obj["Key"])
    for job_id in expected:
        job = jobs.get(job_id)
        if job is None or job.state is not JobState.COMPLETED or job.request_id is None:
            accounting.outputs_extra.extend(
                key for key in stored_by_job.get(job_id, []) if job is None or key != job.result_key
            )
            continue
        files = {f.name: f for f in served_by_request.get(job.request_id, [])}
        accounting.outputs_served += len(files)
        keys = [key for key in stored_by_job.get(job_id, []) if key != job.result_key]
        stored = {key.rsplit("/", 1)[-1]: key for key in keys}
        accounting.outputs_stored += len(stored)
        accounting.outputs_missing += [f"{job_id}/{name}" for name in files.keys() - stored.keys()]
        accounting.outputs_extra += [stored[name] for name in stored.keys() - files.keys()]
        for name in files.keys() & stored.keys():
            body = s3.get_object(Bucket=bucket, Key=stored[name])["Body"].read()
            if (len(body), hashlib.sha256(body).hexdigest()) != (files[name].size, files[name].sha256):
                accounting.outputs_differing.append(stored[name])


def _account_events(
    accounting: Accounting, expected: list[str], jobs: dict[str, Job], events: list[dict[str, object]]
) -> None:
    per_job: Counter[str] = Counter()
    for event in events:
        detail = event.get("detail")
        if event.get("detail-type") in COMPLETION_EVENTS and isinstance(detail, dict):
            per_job[str(detail.get("job_id"))] += 1
    accounting.events = sum(per_job.values())
    for job_id in expected:
        job = jobs.get(job_id)
        # A job rejected at intake never reached the store; it is announced by no event.
        if job is None or job.state not in ANNOUNCED_STATES:
            continue
        if per_job[job_id] == 0:
            accounting.jobs_without_event.append(job_id)
        elif per_job[job_id] > 1:
            accounting.jobs_with_extra_events[job_id] = per_job[job_id]
