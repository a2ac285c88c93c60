"""The reconciler: moves waiting jobs forward through the completion hand-off, fails what fal no
longer holds, re-drives jobs a crashed submit left behind, gives up after the horizon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from falflow.completion.finalise import JOB_FAILED, Finaliser
from falflow.completion.handoff import CompletionHandoff
from falflow.fal.errors import FalNotFoundError, FalServerError
from falflow.fal.platform import RequestHistoryItem
from falflow.fal.queue import QueueStatus
from falflow.jobs import Job, JobError, JobState, RequestUrls, isoformat, utcnow
from falflow.jobs.intake import original_request
from falflow.jobs.requests import CANCELLED_ACTION, JobRequests
from falflow.reconcile.reconciler import ACTOR, Action, ReconcilePolicy, Reconciler
from tests.fakes.completion import FakeFalQueue, MemoryInbox, MemoryOutputsQueue, RecordingPublisher
from tests.fakes.job_store import InMemoryJobStore
from tests.fakes.webhook_events import delivery

T0 = utcnow()
LATER = T0 + timedelta(minutes=15)
POLICY = ReconcilePolicy(
    reconcile_after=timedelta(minutes=10), give_up_after=timedelta(hours=24), concurrency=4
)
BASE = "https://queue.fal.run/fal-ai/flux/requests"


class IntakeQueueSpy:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, body: str) -> None:
        self.bodies.append(body)


class Harness:
    def __init__(self) -> None:
        self.jobs = InMemoryJobStore()
        self.fal = FakeFalQueue()
        self.inbox = MemoryInbox()
        self.outputs_queue = MemoryOutputsQueue()
        self.events = RecordingPublisher()
        self.intake_queue = IntakeQueueSpy()
        self.handoff = CompletionHandoff(self.jobs, self.inbox, self.outputs_queue)
        self.reconciler = Reconciler(
            self.jobs,
            fal=self.fal,
            handoff=self.handoff,
            finaliser=Finaliser(self.jobs, self.events, "outputs-bucket"),
            intake_queue=self.intake_queue,
            policy=POLICY,
        )

    def submitted(self, job_id: str, request_id: str, *, at: Any = T0, **fields: Any) -> Job:
        self.jobs.create(
            Job.new(job_id, source="sqs:m", source_kind="sqs", now=at, model="fal-ai/flux/dev", **fields)
        )
        urls = RequestUrls(
            status_url=f"{BASE}/{request_id}/status",
            response_url=f"{BASE}/{request_id}",
            cancel_url=f"{BASE}/{request_id}/cancel",
        )
        self.jobs.bind_request(job_id, request_id, urls=urls)
        job = self.jobs.confirm_submission(job_id, request_id, now=at)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        assert job is not None
        return job


@pytest.fixture
def h() -> Harness:
    return Harness()


def status(state: str, **fields: Any) -> QueueStatus:
    return QueueStatus(status=state, **fields)  # type: ignore[arg-type]


def test_lost_webhooks_are_recorded_through_the_same_handoff(h: Harness) -> None:
    h.submitted("done", "r-done")
    h.submitted("running", "r-running")
    h.submitted("queued", "r-queued")
    h.submitted("fresh", "r-fresh", at=LATER - timedelta(minutes=2))  # not waiting long enough yet
    h.fal.statuses[f"{BASE}/r-done/status"] = status("COMPLETED")
    h.fal.results[f"{BASE}/r-done"] = {"images": [{"url": "https://v3.fal.media/files/x.png"}]}
    h.fal.statuses[f"{BASE}/r-running/status"] = status("IN_PROGRESS")
    h.fal.statuses[f"{BASE}/r-queued/status"] = status("IN_QUEUE", queue_position=3)

    report = h.reconciler.run(LATER)

    assert report.actions == {Action.COMPLETED: 1, Action.ADVANCED: 1, Action.WAITING: 1}
    done = h.get("done")
    assert done.state is JobState.STORING
    assert done.completion_source == "reconcile"
    (message,) = h.outputs_queue.messages
    assert message.job_id == "done"
    assert message.source == "reconcile"
    assert json.loads(h.inbox.objects[message.completion_key])["payload"]["images"][0]["url"].endswith(
        "x.png"
    )
    assert h.get("running").state is JobState.IN_PROGRESS
    assert h.get("queued").state is JobState.SUBMITTED
    assert h.get("fresh").state is JobState.SUBMITTED
    assert ("status", f"{BASE}/r-fresh/status") not in h.fal.calls
    assert [t.action for t in done.trail] == ["completion_recorded"]
    assert [t.action for t in h.get("running").trail] == ["advanced"]


def test_a_webhook_that_won_the_race_leaves_the_reconciler_nothing_to_record(h: Harness) -> None:
    job = h.submitted("done", "r-done")
    h.fal.statuses[f"{BASE}/r-done/status"] = status("COMPLETED")
    h.fal.results[f"{BASE}/r-done"] = {"images": []}
    stale_view = [job]
    h.handoff.record("done", "r-done", delivery("r-done", payload={}), source="webhook", now=LATER)

    assert h.reconciler._reconcile_one(stale_view[0], LATER) is Action.ALREADY_RECORDED
    assert len(h.outputs_queue.messages) == 1
    assert h.get("done").completion_source == "webhook"


def test_a_result_fal_no_longer_holds_fails_the_job_with_that_reason(h: Harness) -> None:
    h.submitted("expired", "r-expired")
    h.submitted("unknown", "r-unknown")
    h.fal.statuses[f"{BASE}/r-expired/status"] = status("COMPLETED")
    h.fal.results[f"{BASE}/r-expired"] = FalNotFoundError("gone", status=404)
    h.fal.statuses[f"{BASE}/r-unknown/status"] = FalNotFoundError("no such request", status=404)

    report = h.reconciler.run(LATER)

    assert report.actions == {Action.FAILED: 2}
    for job_id in ("expired", "unknown"):
        job = h.get(job_id)
        assert job.state is JobState.FAILED
        assert job.error is not None
        assert job.error.type == "result_unavailable"
        assert "no longer" in job.error.message
        assert job.event_published_at is not None
    assert [e[0] for e in h.events.events] == [JOB_FAILED, JOB_FAILED]
    assert h.outputs_queue.messages == []


def test_a_failed_fal_request_is_recorded_as_an_error_completion(h: Harness) -> None:
    h.submitted("bad", "r-bad")
    h.fal.statuses[f"{BASE}/r-bad/status"] = status(
        "COMPLETED", error="Invalid status code: 422", error_type="x"
    )
    assert h.reconciler.run(LATER).actions == {Action.COMPLETED: 1}
    body = json.loads(h.inbox.objects[h.outputs_queue.messages[0].completion_key])
    assert (body["status"], body["error"], body["error_type"]) == ("ERROR", "Invalid status code: 422", "x")


def test_fal_trouble_leaves_the_job_for_the_next_run(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h.submitted("j", "r-j")
    h.fal.statuses[f"{BASE}/r-j/status"] = FalServerError("busy", status=503, retryable=True)
    assert h.reconciler.run(LATER).actions == {Action.WAITING: 1}
    assert h.get("j").state is JobState.SUBMITTED
    # ... and says so once, with the job and why (falflow.failures).
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert (warning.getMessage(), warning.path, warning.job_id) == ("record failed", "reconcile", "j")  # type: ignore[attr-defined]
    assert (warning.error_type, warning.request_id) == ("FalServerError", "r-j")  # type: ignore[attr-defined]


def test_an_unexpected_error_on_one_job_is_reported_and_the_run_goes_on(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.submitted("j", "r-j")
    # No status staged: the fake fal raises KeyError, an error no one expected (not a FalError).
    assert h.reconciler.run(LATER).actions == {Action.ERROR: 1}
    (warning,) = [r for r in caplog.records if r.levelname in {"WARNING", "ERROR"}]
    assert (warning.levelname, warning.job_id, warning.error_type) == ("WARNING", "j", "KeyError")  # type: ignore[attr-defined]


def test_a_recorded_completion_that_was_never_handed_over_is_handed_over(h: Harness) -> None:
    h.submitted("stuck", "r-stuck")
    crashing = CompletionHandoff(h.jobs, h.inbox, MemoryOutputsQueue(fail_sends=1))
    with pytest.raises(ConnectionError):
        crashing.record("stuck", "r-stuck", delivery("r-stuck", payload={}), source="webhook", now=T0)

    assert h.reconciler.run(LATER).actions == {Action.HANDED_OVER: 1}
    assert [m.job_id for m in h.outputs_queue.messages] == ["stuck"]
    assert h.reconciler.run(LATER + timedelta(minutes=5)).actions == {Action.SKIPPED: 1}
    assert len(h.outputs_queue.messages) == 1


def _stored_by_a_run_that_died(h: Harness, job_id: str, *, lease_until: Any) -> str:
    """A handed-over job whose store run took the lease and died (no release)."""
    h.submitted(job_id, f"r-{job_id}")
    h.handoff.record(job_id, f"r-{job_id}", delivery(f"r-{job_id}", payload={}), source="webhook", now=T0)
    lease = lease_until - T0
    held = h.jobs.take_store_lease(job_id, seen_until=None, now=T0, lease=lease)
    assert held is not None
    assert held.store_lease_until is not None
    return held.store_lease_until


def test_a_store_lease_that_outlived_its_run_is_taken_over_once(h: Harness) -> None:
    lease = _stored_by_a_run_that_died(h, "orphan", lease_until=T0 + timedelta(minutes=16))
    h.outputs_queue.messages.clear()

    assert h.reconciler.run(LATER).actions == {Action.SKIPPED: 1}  # the lease is live: a run may hold it
    assert h.outputs_queue.messages == []
    after = T0 + timedelta(minutes=17)
    assert h.reconciler.run(after).actions == {Action.TAKEN_OVER: 1}
    assert [m.job_id for m in h.outputs_queue.messages] == ["orphan"]
    job = h.get("orphan")
    assert (job.state, job.store_lease_until, job.store_takeovers) == (JobState.STORING, None, 1)
    assert job.trail[-1].action == "store_taken_over"
    assert lease in job.trail[-1].reason
    # the next run finds the lease free: the handed message is on its way; nothing sent again
    assert h.reconciler.run(after + timedelta(minutes=5)).actions == {Action.SKIPPED: 1}
    assert len(h.outputs_queue.messages) == 1


def test_a_job_whose_store_runs_keep_dying_ends_failed_with_one_event(h: Harness) -> None:
    _stored_by_a_run_that_died(h, "killer", lease_until=T0 + timedelta(minutes=16))
    now = T0 + timedelta(minutes=17)
    for _ in range(POLICY.max_store_takeovers):
        assert h.reconciler.run(now).actions == {Action.TAKEN_OVER: 1}
        held = h.jobs.take_store_lease("killer", seen_until=None, now=now, lease=timedelta(minutes=16))
        assert held is not None  # the handed message's run takes the lease … and dies too
        now += timedelta(minutes=17)

    assert h.reconciler.run(now).actions == {Action.FAILED: 1}
    job = h.get("killer")
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.type == "store_abandoned"
    assert f"{POLICY.max_store_takeovers + 1} store runs stopped" in job.error.message
    assert [event[0] for event in h.events.events] == [JOB_FAILED]
    assert h.reconciler.run(now + timedelta(minutes=20)).actions == {}


def test_give_up_after_the_horizon_with_a_cancel_and_one_event(h: Harness) -> None:
    h.submitted("ancient", "r-ancient")
    h.fal.statuses[f"{BASE}/r-ancient/status"] = status("IN_QUEUE")
    much_later = T0 + timedelta(hours=25)

    assert h.reconciler.run(much_later).actions == {Action.GAVE_UP: 1}
    assert h.reconciler.run(much_later).actions == {}

    job = h.get("ancient")
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.type == "gave_up"
    assert ("cancel", f"{BASE}/r-ancient/cancel") in h.fal.calls
    assert [t.action for t in job.trail] == ["failed", "cancel_requested"]
    assert len(h.events.events) == 1


def accepted(h: Harness, job_id: str, **fields: Any) -> Job:
    job, _ = h.jobs.create(
        Job.new(
            job_id,
            source="sqs:m",
            source_kind="sqs",
            now=T0,
            model="fal-ai/flux/dev",
            input={"prompt": "p", "image_url": "s3://in/a.png"},
            files={"image_url": "s3://in/a.png"},
            metadata={"k": "v"},
            **fields,
        )
    )
    return job


def test_a_job_left_accepted_is_redriven_through_the_intake_queue_not_resubmitted(h: Harness) -> None:
    accepted(
        h,
        "orphan",
        submit_ambiguous_at=isoformat(T0),
        submit_lease_until=isoformat(T0 + timedelta(minutes=5)),
    )
    accepted(h, "busy", submit_lease_until=isoformat(LATER + timedelta(minutes=5)))

    report = h.reconciler.run(LATER)

    assert report.actions == {Action.REDRIVEN: 1, Action.SKIPPED: 1}
    (body,) = h.intake_queue.bodies
    message = json.loads(body)
    assert message == {
        "job_id": "orphan",
        "model": "fal-ai/flux/dev",
        "input": {"prompt": "p"},
        "files": {"image_url": "s3://in/a.png"},
        "metadata": {"k": "v"},
        "priority": "normal",
    }
    assert h.fal.calls == []  # the reconciler itself never sends a job to fal
    # a second run soon after does not re-send it again
    assert h.reconciler.run(LATER + timedelta(minutes=1)).actions[Action.REDRIVEN] == 0


def test_an_s3_job_is_redriven_as_its_object_created_notification() -> None:
    job = Job.new(
        "s3-abc", source="s3://in-bucket/upscale/my cat.png?versionId=v1", source_kind="s3_media", now=T0
    )
    record = json.loads(original_request(job) or "")["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["s3"]["bucket"]["name"] == "in-bucket"
    assert record["s3"]["object"]["versionId"] == "v1"
    assert record["s3"]["object"]["key"] == "upscale/my+cat.png"  # encoded as S3 notifications are
    unversioned = Job.new("s3-x", source="s3://in-bucket/a.png", source_kind="s3_media", now=T0)
    assert original_request(unversioned) is None


def test_two_runs_at_once_act_once(h: Harness) -> None:
    for i in range(6):
        h.submitted(f"j{i}", f"r{i}")
        h.fal.statuses[f"{BASE}/r{i}/status"] = status("COMPLETED")
        h.fal.results[f"{BASE}/r{i}"] = {"images": []}

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: h.reconciler.run(LATER), range(2)))

    assert sum(r.actions[Action.COMPLETED] for r in reports) == 6
    assert len(h.outputs_queue.messages) == 6
    assert {m.job_id for m in h.outputs_queue.messages} == {f"j{i}" for i in range(6)}


def test_the_run_stops_taking_jobs_when_time_runs_out(h: Harness) -> None:
    for i in range(3):
        h.submitted(f"j{i}", f"r{i}")
        h.fal.statuses[f"{BASE}/r{i}/status"] = status("IN_QUEUE")
    report = h.reconciler.run(LATER, time_left=lambda: 0.0)
    assert report.stopped_early
    assert report.examined == 0


def test_the_redriven_message_is_planned_by_the_submit_path_as_the_same_job_and_work() -> None:
    """Contract with the submit path: what the reconciler re-sends maps to the very same job."""
    from falflow.submit.plan import Planner  # noqa: PLC0415 - the submit path's own planner
    from falflow.submit.routes import RouteTable  # noqa: PLC0415
    from falflow.submit.sources import JobMessage, message_job_id  # noqa: PLC0415

    original = {
        "model": "fal-ai/flux/dev",
        "input": {"prompt": "p"},
        "metadata": {"k": "v"},
        "start_timeout": 30.0,
    }
    job_id = message_job_id(json.dumps(original), original)  # no caller job_id: a content hash
    job = Job.new(
        job_id,
        source="sqs:m1",
        source_kind="sqs",
        now=T0,
        model="fal-ai/flux/dev",
        input={"prompt": "p"},
        metadata={"k": "v"},
        start_timeout=30.0,
    )
    body = original_request(job)
    assert body is not None
    plan = Planner(RouteTable(), "jobs/", objects=None, input_buckets=()).plan(
        JobMessage(body=body, message_id="redrive-1")
    )  # type: ignore[arg-type]
    assert plan is not None
    assert plan.job_id == job_id
    assert plan.request.model == job.model
    assert plan.request.input == job.input
    assert plan.request.metadata == job.metadata
    assert plan.request.start_timeout == job.start_timeout


class History:
    """fal's request history: these items for every lookup (or ``failure`` raised)."""

    def __init__(self, items: list[RequestHistoryItem], failure: Exception | None = None) -> None:
        self.items = items
        self.failure = failure

    def iter_requests(self, endpoint_ids: Any, **_: Any) -> Iterator[RequestHistoryItem]:
        if self.failure is not None:
            raise self.failure
        yield from self.items


def history_item(request_id: str, prompt: str) -> RequestHistoryItem:
    at = isoformat(T0 - timedelta(minutes=1))  # sent before the job was bound
    return RequestHistoryItem(
        request_id=request_id,
        endpoint_id="fal-ai/flux/dev",
        started_at=at,
        sent_at=at,
        json_input={"prompt": prompt},
    )


def reconciler_with(h: Harness, history: History) -> Reconciler:
    return Reconciler(
        h.jobs,
        fal=h.fal,
        handoff=h.handoff,
        finaliser=Finaliser(h.jobs, h.events, "outputs-bucket"),
        intake_queue=h.intake_queue,
        policy=POLICY,
        requests=JobRequests(h.jobs, h.fal, history, actor=ACTOR),
    )


def test_a_duplicate_of_a_job_whose_submit_was_ambiguous_is_cancelled_once(h: Harness) -> None:
    h.submitted("amb", "r-bound", submit_ambiguous_at=isoformat(T0))
    h.submitted("other", "r-other")  # same input, its own job: never touched
    h.fal.statuses[f"{BASE}/r-bound/status"] = status("IN_QUEUE")
    h.fal.statuses[f"{BASE}/r-other/status"] = status("IN_QUEUE")
    history = History(
        [
            history_item("r-bound", "p"),
            history_item("r-dup", "p"),
            history_item("r-other", "p"),
            history_item("r-else", "another input"),
        ]
    )
    reconciler = reconciler_with(h, history)

    reconciler.run(LATER)
    reconciler.run(LATER)

    job = h.get("amb")
    assert job.duplicate_requests == ["r-dup"]
    assert [call for call in h.fal.calls if call[0] == "cancel"] == [
        ("cancel", "https://queue.fal.run/fal-ai/flux/requests/r-dup/cancel")
    ]
    assert [entry.action for entry in job.trail] == [CANCELLED_ACTION]
    assert h.get("other").duplicate_requests == []  # no ambiguity: no lookup


def test_an_unreadable_history_leaves_the_poll_alone(h: Harness) -> None:
    h.submitted("amb", "r-bound", submit_ambiguous_at=isoformat(T0))
    h.fal.statuses[f"{BASE}/r-bound/status"] = status("IN_PROGRESS")
    history = History([], failure=FalServerError("fal platform error 500", status=500))

    report = reconciler_with(h, history).run(LATER)

    assert report.actions == {Action.ADVANCED: 1}
    assert h.get("amb").duplicate_requests == []


def _handed_over_untaken(h: Harness, job_id: str) -> str:
    """A handed-over job whose outputs message no store run took (it never got a lease): the
    message's body, as SQS moved it to the DLQ."""
    h.submitted(job_id, f"r-{job_id}")
    h.handoff.record(job_id, f"r-{job_id}", delivery(f"r-{job_id}", payload={}), source="webhook", now=T0)
    (message,) = h.outputs_queue.messages
    h.outputs_queue.messages.clear()
    return message.model_dump_json()


def test_a_handoff_without_a_lease_is_left_to_its_message_however_long_it_waits(h: Harness) -> None:
    """A message in a backlog may wait for hours: without its DLQ entry nothing says no store run
    will take it, so the pass sends nothing and counts no takeover."""
    _handed_over_untaken(h, "waiting")
    assert h.reconciler.run(T0 + timedelta(days=1) - timedelta(minutes=1)).actions == {Action.SKIPPED: 1}
    assert h.outputs_queue.messages == []
    assert h.get("waiting").store_takeovers == 0


def test_a_handoff_sqs_moved_to_the_dlq_unstarted_is_handed_over_again_once(h: Harness) -> None:
    moved = _handed_over_untaken(h, "untaken")
    later = T0 + timedelta(minutes=40)

    assert h.reconciler.hand_over_untaken(h.get("untaken"), moved, later)
    (again,) = h.outputs_queue.messages
    assert (again.job_id, again.handed_over_at) == ("untaken", isoformat(later))
    taken = h.get("untaken")
    assert (taken.state, taken.store_takeovers, taken.completion_enqueued_at) == (
        JobState.STORING,
        1,
        isoformat(later),
    )
    assert taken.trail[-1].action == "store_taken_over"
    assert "SQS moved the outputs message" in taken.trail[-1].reason
    # the same DLQ entry read again (its delete failed) is the earlier hand-off's: nothing sent
    assert not h.reconciler.hand_over_untaken(taken, moved, later + timedelta(minutes=5))
    assert len(h.outputs_queue.messages) == 1


def test_a_moved_message_of_a_job_a_store_run_took_or_finished_is_left(h: Harness) -> None:
    moved = _handed_over_untaken(h, "held")
    leased = h.jobs.take_store_lease("held", seen_until=None, now=T0, lease=timedelta(hours=1))
    assert leased is not None
    assert not h.reconciler.hand_over_untaken(leased, moved, T0 + timedelta(minutes=5))
    _final_without_event(h, "ended")
    assert not h.reconciler.hand_over_untaken(h.get("ended"), moved, T0 + timedelta(minutes=5))
    assert not h.reconciler.hand_over_untaken(h.get("held"), "not an outputs message", T0)
    assert h.outputs_queue.messages == []


def test_a_handoff_that_is_never_taken_ends_failed_after_the_takeovers(h: Harness) -> None:
    moved = _handed_over_untaken(h, "never")
    now = T0
    for _ in range(POLICY.max_store_takeovers):
        now += timedelta(minutes=40)
        assert h.reconciler.hand_over_untaken(h.get("never"), moved, now)
        moved = h.outputs_queue.messages.pop().model_dump_json()  # moved to the DLQ again
    assert not h.reconciler.hand_over_untaken(h.get("never"), moved, now)
    job = h.get("never")
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.type == "store_abandoned"
    assert [event[0] for event in h.events.events] == [JOB_FAILED]


def _final_without_event(h: Harness, job_id: str, *, claimed_until: Any = None) -> Job:
    """A job whose end was written by a publisher that died before its event went out."""
    h.submitted(job_id, f"r-{job_id}")
    error = JobError(type="test", message="failed for the test")
    failed = h.jobs.fail(job_id, error, now=T0)
    assert failed is not None
    if claimed_until is not None:
        assert h.jobs.claim_event(job_id, now=T0, until=claimed_until) is not None
    return h.get(job_id)


def test_a_final_job_whose_event_no_publisher_sent_is_announced_once(h: Harness) -> None:
    _final_without_event(h, "silent")
    assert h.reconciler.run(LATER).actions == {Action.ANNOUNCED: 1}
    assert [(kind, detail["job_id"]) for kind, detail in h.events.events] == [(JOB_FAILED, "silent")]
    assert h.get("silent").event_published_at is not None
    assert h.reconciler.run(LATER + timedelta(minutes=5)).actions == {}
    assert len(h.events.events) == 1


def test_a_live_claim_on_the_event_is_left_to_its_publisher(h: Harness) -> None:
    _final_without_event(h, "claimed", claimed_until=T0 + timedelta(minutes=20))
    assert h.reconciler.run(LATER).actions == {Action.SKIPPED: 1}
    assert h.events.events == []
    # once the claim ran out with no receipt, the event never went out: publish it
    assert h.reconciler.run(T0 + timedelta(minutes=21)).actions == {Action.ANNOUNCED: 1}
    assert len(h.events.events) == 1


def test_final_jobs_past_the_lookback_are_not_read(h: Harness) -> None:
    _final_without_event(h, "old")
    assert h.reconciler.run(T0 + POLICY.late_event_lookback + timedelta(minutes=1)).actions == {}
