"""The store: outputs copied once, result.json, the right final state, one event — and safe to
run again, concurrently, or after a crash halfway."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from falflow.completion.finalise import (
    DEFAULT_RECEIPT_WINDOW_S,
    JOB_COMPLETED,
    JOB_FAILED,
    EventReceiptPendingError,
    Finaliser,
)
from falflow.completion.handoff import CompletionHandoff
from falflow.completion.messages import OutputsMessage
from falflow.fal.errors import FalNotFoundError, FalPlatformError, FalServerError, FalValidationError
from falflow.fal.platform import PayloadDeletion
from falflow.fal.ports import FalRequestPayloads
from falflow.jobs import Job, JobState, isoformat, utcnow
from falflow.reconcile.reconciler import Action, ReconcilePolicy, Reconciler
from falflow.store.copy import MIN_PART_SIZE, CopyLimits
from falflow.store.media import MediaFetcher, MediaPolicy, MediaTransientError
from falflow.store.worker import DEFAULT_LEASE, StoreOutcome, StoreWorker
from tests.fakes.completion import (
    FakeFalQueue,
    MemoryInbox,
    MemoryOutputBucket,
    MemoryOutputsQueue,
    RecordingPublisher,
)
from tests.fakes.job_store import InMemoryJobStore
from tests.fakes.webhook_events import delivery

NOW = utcnow()
VIDEO = bytes(range(256)) * (3 * MIN_PART_SIZE // 256 + 7)  # a multipart-sized file
IMAGE = b"\x89PNG" + b"i" * 100


class Cdn:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {
            "/files/r1/image-0.png": (IMAGE, "image/png"),
            "/files/r1/output.mp4": (VIDEO, "video/mp4"),
        }
        self.gets: list[str] = []
        self.broken: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.gets.append(f"{request.headers['host']}{path}")
        if path in self.broken:
            return httpx.Response(503)
        if path not in self.files:
            return httpx.Response(404)
        body, content_type = self.files[path]
        return httpx.Response(200, content=body, headers={"content-type": content_type})


class Harness:
    def __init__(self) -> None:
        self.jobs = InMemoryJobStore()
        self.inbox = MemoryInbox()
        self.queue = MemoryOutputsQueue()
        self.outputs = MemoryOutputBucket()
        self.events = RecordingPublisher()
        self.cdn = Cdn()
        self.fal = FakeFalQueue()
        self.handoff = CompletionHandoff(self.jobs, self.inbox, self.queue)
        self.worker = self.worker_with(payloads=None)

    def worker_with(self, *, payloads: FalRequestPayloads | None) -> StoreWorker:
        fetcher = MediaFetcher(
            MediaPolicy.build(["*.fal.media"], [], max_bytes=32 * 2**20),
            httpx.Client(transport=httpx.MockTransport(self.cdn)),
            resolve=lambda host, port: ["93.184.215.14"],
        )
        return StoreWorker(
            self.jobs,
            inbox=self.inbox,
            outputs=self.outputs,
            media=fetcher,
            fal=self.fal,
            finaliser=Finaliser(self.jobs, self.events, self.outputs.bucket),
            limits=CopyLimits(part_size=MIN_PART_SIZE, concurrency=2, max_bytes=32 * 2**20),
            payloads=payloads,
        )

    def job(self, job_id: str = "job-1", request_id: str = "r1", **fields: Any) -> None:
        self.jobs.create(
            Job.new(
                job_id,
                source="sqs:m",
                source_kind="sqs",
                now=NOW,
                model="fal-ai/flux/dev",
                metadata={"customer": "c-7"},
                **fields,
            )
        )
        self.jobs.bind_request(job_id, request_id)
        self.jobs.confirm_submission(job_id, request_id, now=NOW)

    def record(self, body: bytes, job_id: str = "job-1", request_id: str = "r1") -> OutputsMessage:
        self.handoff.record(job_id, request_id, body, source="webhook", now=NOW)
        return self.queue.messages[-1]

    def get(self, job_id: str = "job-1") -> Job:
        job = self.jobs.get(job_id)
        assert job is not None
        return job


OK_PAYLOAD = {
    "images": [{"url": "https://v3.fal.media/files/r1/image-0.png", "content_type": "image/png"}],
    "video": {"url": "https://v3.fal.media/files/r1/output.mp4", "file_name": "output.mp4"},
    "timings": {"inference": 1.5},
    "seed": 3,
}


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_outputs_are_copied_result_written_job_completed_and_announced_once(h: Harness) -> None:
    h.job()
    message = h.record(delivery("r1", payload=OK_PAYLOAD))

    assert h.worker.handle(message, NOW) is StoreOutcome.COMPLETED

    job = h.get()
    assert job.state is JobState.COMPLETED
    assert job.outputs == ["outputs/job-1/image-0.png", "outputs/job-1/output.mp4"]
    assert job.result_key == "outputs/job-1/result.json"
    assert job.store_lease_until is None
    assert h.outputs.objects["outputs/job-1/output.mp4"].body == VIDEO
    assert h.outputs.objects["outputs/job-1/output.mp4"].content_type == "video/mp4"
    assert h.outputs.objects["outputs/job-1/image-0.png"].content_type == "image/png"
    result = json.loads(h.outputs.objects["outputs/job-1/result.json"].body)
    assert result["request_id"] == "r1"
    assert result["payload"]["video"]["url"] == "s3://outputs-bucket/outputs/job-1/output.mp4"
    assert result["payload"]["seed"] == 3
    assert result["timings"]["fal"] == {"inference": 1.5}
    assert (detail_type := h.events.events[0][0]) == JOB_COMPLETED, detail_type
    detail = h.events.events[0][1]
    assert detail["outputs"] == job.outputs
    assert detail["metadata"] == {"customer": "c-7"}
    assert detail["status"] == "COMPLETED"
    assert len(h.events.events) == 1


def test_running_again_changes_nothing_and_uploads_nothing(h: Harness) -> None:
    h.job()
    message = h.record(delivery("r1", payload=OK_PAYLOAD))
    h.worker.handle(message, NOW)
    writes, gets, job = list(h.outputs.writes), list(h.cdn.gets), h.get()

    assert h.worker.handle(message, NOW + timedelta(minutes=1)) is StoreOutcome.ALREADY_DONE
    assert (h.outputs.writes, h.cdn.gets, h.get()) == (writes, gets, job)
    assert len(h.events.events) == 1


def test_a_crash_halfway_leaves_no_object_and_the_retry_completes_without_copying_twice(h: Harness) -> None:
    h.job()
    message = h.record(delivery("r1", payload=OK_PAYLOAD))
    h.cdn.broken.add("/files/r1/output.mp4")

    with pytest.raises(MediaTransientError):
        h.worker.handle(message, NOW)
    assert "outputs/job-1/output.mp4" not in h.outputs.objects
    assert "outputs/job-1/result.json" not in h.outputs.objects
    assert h.get().state is JobState.STORING
    assert h.get().store_lease_until is None  # released for the retry

    h.cdn.broken.clear()
    assert h.worker.handle(message, NOW + timedelta(minutes=1)) is StoreOutcome.COMPLETED
    assert h.cdn.gets.count("v3.fal.media/files/r1/image-0.png") == 1  # stored once, reused
    assert h.outputs.writes.count("outputs/job-1/image-0.png") == 1
    assert h.get().state is JobState.COMPLETED
    assert len(h.events.events) == 1


def test_a_second_run_while_the_first_holds_the_job_does_nothing(h: Harness) -> None:
    h.job()
    message = h.record(delivery("r1", payload=OK_PAYLOAD))
    h.jobs.take_store_lease("job-1", seen_until=None, now=NOW, lease=timedelta(minutes=5))

    assert h.worker.handle(message, NOW) is StoreOutcome.BUSY
    assert h.cdn.gets == []
    assert h.outputs.objects == {}
    # once the holder's lease has run out (it died), the redelivered message finishes the job
    assert h.worker.handle(message, NOW + timedelta(minutes=6)) is StoreOutcome.COMPLETED


class _BrokenOff(httpx.SyncByteStream):
    """A body that stops after its first bytes, as a connection cut mid-download does."""

    def __iter__(self) -> Any:
        yield IMAGE[:10]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def _truncated(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-length": str(len(IMAGE))}, stream=_BrokenOff())


def _does_not_resolve(host: str, port: int) -> list[str]:
    raise OSError(f"[Errno -2] Name or service not known: {host}")


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"http": httpx.Client(transport=httpx.MockTransport(_truncated))}, "download broke off"),
        ({"resolve": _does_not_resolve}, "cannot resolve v3.fal.media"),
    ],
    ids=["truncated body", "host that does not resolve"],
)
def test_an_output_that_cannot_be_fetched_on_the_last_try_fails_the_job_with_one_event(
    h: Harness, broken: dict[str, Any], reason: str
) -> None:
    h.job()
    message = h.record(delivery("r1", payload={"images": OK_PAYLOAD["images"]}))
    media = {
        "http": httpx.Client(transport=httpx.MockTransport(h.cdn)),
        "resolve": lambda *_: ["93.184.215.14"],
    }
    h.worker = StoreWorker(
        h.jobs,
        inbox=h.inbox,
        outputs=h.outputs,
        media=MediaFetcher(MediaPolicy.build(["*.fal.media"], [], max_bytes=2**20), **{**media, **broken}),
        fal=h.fal,
        finaliser=Finaliser(h.jobs, h.events, h.outputs.bucket),
    )

    with pytest.raises(MediaTransientError, match=reason):  # an early try: SQS retries it
        h.worker.handle(message, NOW)
    assert h.get().state is JobState.STORING
    assert h.events.events == []

    assert h.worker.handle(message, NOW + timedelta(minutes=1), last_attempt=True) is StoreOutcome.FAILED
    job = h.get()
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.type == "output_unavailable"
    assert reason in job.error.message
    assert job.store_lease_until is None
    assert [event[0] for event in h.events.events] == [JOB_FAILED]
    assert h.events.events[0][1]["error"]["type"] == "output_unavailable"
    assert h.outputs.objects == {}
    # The message's SQS duplicate finds the job final and announced: nothing more.
    assert h.worker.handle(message, NOW + timedelta(minutes=2)) is StoreOutcome.ALREADY_DONE
    assert len(h.events.events) == 1


class _Killed(BaseException):
    """SIGKILL: the run stops where it is; nothing after this point of it runs."""


def test_a_store_run_killed_mid_copy_is_taken_over_and_the_job_completes_with_one_copy(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.job()
    message = h.record(delivery("r1", payload=OK_PAYLOAD))
    kills = [1]

    def cdn_killed_mid_video(request: httpx.Request) -> httpx.Response:
        if kills and request.url.path.endswith("output.mp4"):
            kills.pop()
            raise _Killed
        return h.cdn(request)

    worker = StoreWorker(
        h.jobs,
        inbox=h.inbox,
        outputs=h.outputs,
        media=MediaFetcher(
            MediaPolicy.build(["*.fal.media"], [], max_bytes=32 * 2**20),
            httpx.Client(transport=httpx.MockTransport(cdn_killed_mid_video)),
            resolve=lambda host, port: ["93.184.215.14"],
        ),
        fal=h.fal,
        finaliser=Finaliser(h.jobs, h.events, h.outputs.bucket),
    )
    with monkeypatch.context() as killed:
        killed.setattr(worker, "_release", lambda held: None)  # a killed process runs no `finally`
        with pytest.raises(_Killed):
            worker.handle(message, NOW)
    lease = h.get().store_lease_until
    assert lease is not None  # left behind by the dead run
    assert "outputs/job-1/image-0.png" in h.outputs.objects  # stored before the kill

    # Its own message comes back while the lease is live (the local stack's short visibility).
    assert worker.handle(message, NOW + timedelta(seconds=30)) is StoreOutcome.BUSY
    reconciler = Reconciler(
        h.jobs,
        fal=h.fal,
        handoff=h.handoff,
        finaliser=Finaliser(h.jobs, h.events, h.outputs.bucket),
        intake_queue=h.queue,  # type: ignore[arg-type]  # never used for a STORING job
        policy=ReconcilePolicy(),
    )
    sent = len(h.queue.messages)
    after_lease = NOW + DEFAULT_LEASE + timedelta(minutes=1)
    assert reconciler.run(after_lease).actions == {Action.TAKEN_OVER: 1}
    (handed,) = h.queue.messages[sent:]
    # the same completion, as a new hand-off
    assert handed == message.model_copy(update={"handed_over_at": isoformat(after_lease)})

    assert worker.handle(handed, after_lease) is StoreOutcome.COMPLETED
    job = h.get()
    assert job.state is JobState.COMPLETED
    assert job.outputs == ["outputs/job-1/image-0.png", "outputs/job-1/output.mp4"]
    assert h.outputs.writes.count("outputs/job-1/image-0.png") == 1  # one stored copy each
    assert h.outputs.objects["outputs/job-1/output.mp4"].body == VIDEO
    assert [event[0] for event in h.events.events] == [JOB_COMPLETED]
    assert reconciler.run(after_lease + timedelta(minutes=20)).actions == {}
    assert worker.handle(message, after_lease + timedelta(minutes=21)) is StoreOutcome.ALREADY_DONE
    assert len(h.events.events) == 1


def test_an_error_payload_fails_the_job_with_fals_error_kept_whole(h: Harness) -> None:
    h.job()
    detail = {"detail": [{"loc": ["body", "image_url"], "msg": "Image too large", "type": "image_too_large"}]}
    message = h.record(delivery("r1", status="ERROR", error="Invalid status code: 422", payload=detail))

    assert h.worker.handle(message, NOW) is StoreOutcome.FAILED

    job = h.get()
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert (job.error.type, job.error.message, job.error.detail) == (
        "image_too_large",
        "Invalid status code: 422",
        detail,
    )
    assert h.outputs.objects == {}
    assert [e[0] for e in h.events.events] == [JOB_FAILED]
    assert h.events.events[0][1]["error"]["type"] == "image_too_large"


def test_a_payload_error_is_fetched_from_the_queue_result(h: Harness) -> None:
    h.job()
    h.fal.results["https://queue.fal.run/fal-ai/flux/requests/r1"] = OK_PAYLOAD  # built by urls_for
    message = h.record(delivery("r1", payload=None, payload_error="Failed to serialize"))

    assert h.worker.handle(message, NOW) is StoreOutcome.COMPLETED
    assert h.get().outputs == ["outputs/job-1/image-0.png", "outputs/job-1/output.mp4"]
    assert h.fal.calls == [("result", "https://queue.fal.run/fal-ai/flux/requests/r1")]


def test_a_payload_error_uses_the_stored_response_url(h: Harness) -> None:
    h.job(response_url="https://queue.fal.run/fal-ai/flux/requests/r1?stored=1")
    h.fal.results["https://queue.fal.run/fal-ai/flux/requests/r1?stored=1"] = {"images": []}
    message = h.record(delivery("r1", payload=None, payload_error="x"))
    assert h.worker.handle(message, NOW) is StoreOutcome.COMPLETED


@pytest.mark.parametrize(
    ("error", "outcome", "error_type"),
    [
        (FalNotFoundError("gone", status=404), StoreOutcome.FAILED, "result_unavailable"),
        (
            FalValidationError("bad", status=422, detail=[{"type": "content_policy_violation"}]),
            StoreOutcome.FAILED,
            "content_policy_violation",
        ),
    ],
)
def test_a_payload_error_whose_result_fal_cannot_give_fails_the_job(
    h: Harness, error, outcome, error_type
) -> None:
    h.job()
    h.fal.results["https://queue.fal.run/fal-ai/flux/requests/r1"] = error
    message = h.record(delivery("r1", payload=None, payload_error="x"))
    assert h.worker.handle(message, NOW) is outcome
    job = h.get()
    assert job.error is not None
    assert job.error.type == error_type
    assert [e[0] for e in h.events.events] == [JOB_FAILED]


def test_a_transient_fal_error_is_retried_not_failed(h: Harness) -> None:
    h.job()
    h.fal.results["https://queue.fal.run/fal-ai/flux/requests/r1"] = FalServerError(
        "busy", status=503, retryable=True
    )
    message = h.record(delivery("r1", payload=None, payload_error="x"))
    with pytest.raises(FalServerError):
        h.worker.handle(message, NOW)
    assert h.get().state is JobState.STORING


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "http://v3.fal.media/files/r1/image-0.png"},
        {"url": "https://169.254.169.254/latest/meta-data/iam/security-credentials/"},
        {"url": "https://10.1.2.3/x.png"},
        {"url": "https://evil.example.com/x.png"},
        {
            "url": "https://v3.fal.media/files/r1/image-0.png",
            "file_name": "../../outputs/other-job/result.json",
        },
    ],
    ids=["http", "metadata", "private ip", "other host", "dot-dot name"],
)
def test_ssrf_and_path_attempts_are_refused_recorded_and_nothing_is_fetched(
    h: Harness, bad: dict[str, str]
) -> None:
    h.job()
    payload = {"images": [{"url": "https://v3.fal.media/files/r1/image-0.png"}, bad]}
    message = h.record(delivery("r1", payload=payload))

    assert h.worker.handle(message, NOW) is StoreOutcome.FAILED

    assert h.cdn.gets == []  # not even the good file
    assert h.outputs.objects == {}
    job = h.get()
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.type == "output_refused"
    assert job.error.detail
    assert [t.action for t in job.trail] == ["failed"]


def test_a_message_that_does_not_match_the_job_is_dropped(h: Harness) -> None:
    h.job()
    h.record(delivery("r1", payload=OK_PAYLOAD))
    stale = OutputsMessage(job_id="job-1", request_id="r2", completion_key="inbox/job-1/r2.json")
    assert h.worker.handle(stale, NOW) is StoreOutcome.STALE
    assert h.worker.handle(stale.model_copy(update={"job_id": "nope"}), NOW) is StoreOutcome.UNKNOWN_JOB


def test_a_job_made_final_before_its_event_went_out_is_announced_by_the_retry(h: Harness) -> None:
    h.job()
    message = h.record(delivery("r1", payload=OK_PAYLOAD))
    h.events.publish = _raise  # type: ignore[method-assign]  # EventBridge down after the final write
    with pytest.raises(ConnectionError):
        h.worker.handle(message, NOW)
    assert h.get().state is JobState.COMPLETED
    assert h.get().event_published_at is None

    h.events.publish = RecordingPublisher.publish.__get__(h.events)  # type: ignore[method-assign]
    # The failed publish may have reached EventBridge: until its claim runs out, only a receipt
    # could tell, so the retry publishes nothing and comes back after the claim.
    with pytest.raises(EventReceiptPendingError) as pending:
        h.worker.handle(message, NOW)
    assert (pending.value.until - NOW).total_seconds() == pytest.approx(DEFAULT_RECEIPT_WINDOW_S, abs=0.001)
    assert h.events.events == []
    # No receipt came: the event did not go out, and the retry after the claim publishes it.
    later = pending.value.until + timedelta(seconds=1)
    assert h.worker.handle(message, later) is StoreOutcome.ANNOUNCED
    assert [e[0] for e in h.events.events] == [JOB_COMPLETED]
    assert h.worker.handle(message, later) is StoreOutcome.ALREADY_DONE
    assert len(h.events.events) == 1


def test_a_retry_after_a_publish_whose_receipt_came_publishes_nothing(h: Harness) -> None:
    h.job()
    message = h.record(delivery("r1", payload=OK_PAYLOAD))
    # Killed between the publish and its mark: the event is out, the job does not say so.
    h.jobs.mark_event_published = lambda job_id, *, now: None  # type: ignore[method-assign]
    assert h.worker.handle(message, NOW) is StoreOutcome.COMPLETED
    assert [e[0] for e in h.events.events] == [JOB_COMPLETED]
    del h.jobs.mark_event_published
    with pytest.raises(EventReceiptPendingError):
        h.worker.handle(message, NOW + timedelta(seconds=1))
    # The reconciler reads the event's receipt (falflow.reconcile.receipts) and marks the job.
    assert h.jobs.mark_event_published("job-1", now=NOW + timedelta(seconds=2)) is not None
    later = NOW + timedelta(seconds=DEFAULT_RECEIPT_WINDOW_S + 1)
    assert h.worker.handle(message, later) is StoreOutcome.ALREADY_DONE
    assert len(h.events.events) == 1


def test_inline_data_urls_are_stored_without_a_download(h: Harness) -> None:
    h.job()
    payload = {"image": {"url": "data:image/png;base64,iVBORw0KGgo=", "file_name": "tiny.png"}}
    message = h.record(delivery("r1", payload=payload))
    assert h.worker.handle(message, NOW) is StoreOutcome.COMPLETED
    assert h.outputs.objects["outputs/job-1/tiny.png"].body == b"\x89PNG\r\n\x1a\n"
    assert h.cdn.gets == []


def test_the_callers_output_prefix_is_kept_under_outputs(h: Harness) -> None:
    h.job(output_prefix="team-a/run 7")
    message = h.record(delivery("r1", payload={"image": OK_PAYLOAD["images"][0]}))
    h.worker.handle(message, NOW)
    assert h.get().outputs == ["outputs/team-a/run%207/job-1/image-0.png"]


def _raise(*args: Any) -> None:
    raise ConnectionError("EventBridge unavailable")


# ----------------------------------------------------------------- served-from and fal's payloads

RESPONSE_URL = "https://queue.fal.run/fal-ai/flux/requests/r1"


class FakePayloads:
    """fal's DELETE /models/requests/{id}/payloads: records calls; answers ``answer`` (or raises it)."""

    def __init__(self, answer: PayloadDeletion | Exception | None = None) -> None:
        self.answer = answer or PayloadDeletion(cdn_delete_results=[{"link": "x", "exception": None}])
        self.calls: list[tuple[str, str]] = []

    def delete_request_payloads(self, request_id: str, *, idempotency_key: str) -> PayloadDeletion:
        self.calls.append((request_id, idempotency_key))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def with_payloads(h: Harness, payloads: FakePayloads | None) -> StoreWorker:
    return h.worker_with(payloads=payloads)


def test_a_job_that_allowed_fallbacks_records_the_endpoint_fal_says_served_it(h: Harness) -> None:
    h.job(allow_fallbacks=True, response_url=RESPONSE_URL)
    h.fal.served[RESPONSE_URL] = "fal-ai/flux/schnell"

    assert h.worker.handle(h.record(delivery("r1", payload=OK_PAYLOAD)), NOW) is StoreOutcome.COMPLETED

    assert h.get().served_from == "fal-ai/flux/schnell"
    assert h.events.events[0][1]["served_from"] == "fal-ai/flux/schnell"
    result = json.loads(h.outputs.objects["outputs/job-1/result.json"].body)
    assert (result["model"], result["served_from"]) == ("fal-ai/flux/dev", "fal-ai/flux/schnell")


def test_a_job_that_forbade_fallbacks_costs_no_extra_call(h: Harness) -> None:
    h.job(response_url=RESPONSE_URL)  # allow_fallbacks defaults to False

    assert h.worker.handle(h.record(delivery("r1", payload=OK_PAYLOAD)), NOW) is StoreOutcome.COMPLETED

    assert ("served_from", RESPONSE_URL) not in h.fal.calls
    assert h.get().served_from is None


def test_not_knowing_who_served_it_does_not_fail_a_stored_job(h: Harness) -> None:
    h.job(allow_fallbacks=True, response_url=RESPONSE_URL)
    h.fal.served[RESPONSE_URL] = FalNotFoundError("Request not found", status=404)

    assert h.worker.handle(h.record(delivery("r1", payload=OK_PAYLOAD)), NOW) is StoreOutcome.COMPLETED
    assert h.get().served_from is None


def test_fals_payloads_are_deleted_once_our_copy_is_stored_and_that_is_recorded(h: Harness) -> None:
    payloads = FakePayloads()
    worker = with_payloads(h, payloads)
    h.job(delete_payloads=True)

    assert worker.handle(h.record(delivery("r1", payload=OK_PAYLOAD)), NOW) is StoreOutcome.COMPLETED

    job = h.get()
    assert payloads.calls == [("r1", "job-1")]  # the job id keeps a retried deletion idempotent
    assert job.payloads_deleted_at is not None
    assert job.state is JobState.COMPLETED
    assert len(job.outputs) == 2


def test_payloads_are_kept_unless_the_job_asked(h: Harness) -> None:
    payloads = FakePayloads()
    h.job()

    assert with_payloads(h, payloads).handle(h.record(delivery("r1", payload=OK_PAYLOAD)), NOW)
    assert payloads.calls == []
    assert h.get().payloads_deleted_at is None


@pytest.mark.parametrize(
    ("payloads", "reason"),
    [
        (FakePayloads(FalServerError("boom", status=500)), "not deleted: boom"),
        (
            FakePayloads(PayloadDeletion(cdn_delete_results=[{"link": "x", "exception": "denied"}])),
            "could not delete 1 output file(s): denied",
        ),
        (None, "no ADMIN key"),
    ],
)
def test_a_deletion_that_did_not_happen_leaves_the_job_completed_saying_why(
    h: Harness, payloads: FakePayloads | None, reason: str
) -> None:
    h.job(delete_payloads=True)

    outcome = with_payloads(h, payloads).handle(h.record(delivery("r1", payload=OK_PAYLOAD)), NOW)

    job = h.get()
    assert outcome is StoreOutcome.COMPLETED
    assert job.payloads_deleted_at is None
    assert [(t.action, reason in t.reason) for t in job.trail] == [("payloads_kept", True)]


def test_payloads_fal_no_longer_has_count_as_deleted(h: Harness) -> None:
    h.job(delete_payloads=True)
    gone = FalPlatformError("fal platform error 404 not_found: Request not found", status=404)
    worker = with_payloads(h, FakePayloads(gone))

    assert worker.handle(h.record(delivery("r1", payload=OK_PAYLOAD)), NOW) is StoreOutcome.COMPLETED
    assert h.get().payloads_deleted_at is not None
