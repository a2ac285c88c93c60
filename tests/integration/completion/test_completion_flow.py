"""The completion path end to end on moto's server with the fal emulator and the real webhook and
store handlers: duplicates, reordering, races with the submit's own write, ERROR and
payload_error deliveries, and SSRF / path attempts in a payload."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from falflow.aws.clients import aws_client
from falflow.jobs import Job, JobState
from falflow_tools.emulator import RunningEmulator
from tests.fakes.webhook_events import delivery
from tests.fixtures.completion import CompletionStack, CompletionStackFactory
from tests.fixtures.fal_emulator import WebhookSink
from tests.integration.completion.helpers import (
    EXPECTED_OUTPUTS,
    MODELS,
    SentJob,
    accept,
    cdn_downloads,
    send,
    submit_write,
)

CONTENT_TYPES = {"png": "image/png", "mp4": "video/mp4", "wav": "audio/wav"}


def replay(stack: CompletionStack, sink: WebhookSink, raw: Any) -> int:
    """Deliver a webhook the emulator sent (exact bytes and headers) through the real handler."""
    return stack.deliver(raw.body, raw.headers, raw.path.split("job_id=", 1)[1], base64_body=True)


def test_every_delivery_tripled_and_shuffled_some_before_the_submits_write(
    completion_stack: CompletionStackFactory, fal_emulator: RunningEmulator, webhook_sink: WebhookSink
) -> None:
    stack = completion_stack(fal=fal_emulator)
    sent: list[SentJob] = []
    for i in range(9):
        model = list(MODELS)[i % 3]
        sent.append(
            send(stack, fal_emulator, f"job-{i}", model, MODELS[model], webhook_base=webhook_sink.url)
        )
    early, late = sent[::2], sent[1::2]
    for job in early:
        submit_write(stack, job)
    deliveries = webhook_sink.wait_for(len(sent))
    fal_emulator.control.wait_idle()

    # Three copies of every delivery in random order, from four threads, while the submit's own
    # write for the other jobs lands somewhere in between.
    copies = [d for d in deliveries for _ in range(3)]
    random.Random(7).shuffle(copies)
    late_writes = threading.Thread(target=lambda: [submit_write(stack, job) for job in late])
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(replay, stack, webhook_sink, d) for d in copies[:8]]
        late_writes.start()
        futures += [pool.submit(replay, stack, webhook_sink, d) for d in copies[8:]]
        statuses = Counter(f.result() for f in futures)
    late_writes.join()
    assert statuses == {200: 27}
    assert stack.queue_depth("OutputsQueue") == len(sent)  # one hand-off per job, none for duplicates

    # Each batch is handled by two store invocations at once (a duplicate delivery of the batch).
    while records := stack.outputs_messages(max_messages=5):
        with ThreadPoolExecutor(2) as pool:
            failed = list(pool.map(lambda _: stack.store(records, delete=False), range(2)))
        assert failed == [[], []]
        assert stack.store(records) == []  # and a redelivery after both: nothing left to do

    downloads = cdn_downloads(fal_emulator)
    events = stack.completion_events()
    assert Counter(e["detail"]["job_id"] for e in events) == {job.job_id: 1 for job in sent}
    for job in sent:
        _assert_completed_and_stored_once(stack, job, events, downloads)
    assert sum(downloads.values()) == sum(EXPECTED_OUTPUTS[job.model] for job in sent)


def _assert_completed_and_stored_once(
    stack: CompletionStack, job: SentJob, events: list[dict[str, Any]], downloads: dict[str, int]
) -> None:
    """One job of the shuffled-deliveries test: its record, stored files, result.json and event."""
    record = stack.job(job.job_id)
    assert record.state is JobState.COMPLETED, job.job_id
    assert record.request_id == job.submission.request_id
    assert record.status_url == job.submission.status_url  # the submit's write was not lost
    assert len(record.outputs) == EXPECTED_OUTPUTS[job.model]
    for key in record.outputs:
        stored = stack.s3_object(key)
        assert stored["content_type"] == CONTENT_TYPES[key.rsplit(".", 1)[1]]
        assert len(stored["body"]) > 0
    _assert_result_json_points_at_the_copies(stack, job, record)
    _assert_one_event_and_one_download_each(job, record, events, downloads)


def _assert_result_json_points_at_the_copies(stack: CompletionStack, job: SentJob, record: Job) -> None:
    result = json.loads(stack.s3_object(f"outputs/{job.job_id}/result.json")["body"])
    urls = _urls(result["payload"])
    assert urls == [f"s3://{stack.bucket}/{key}" for key in record.outputs]
    assert result["request_id"] == job.submission.request_id
    assert stack.keys(f"outputs/{job.job_id}/") == sorted(
        [*record.outputs, f"outputs/{job.job_id}/result.json"]
    )


def _assert_one_event_and_one_download_each(
    job: SentJob, record: Job, events: list[dict[str, Any]], downloads: dict[str, int]
) -> None:
    (event,) = [e for e in events if e["detail"]["job_id"] == job.job_id]
    assert event["detail-type"] == "Job Completed"
    assert event["source"] == "falflow"
    assert event["detail"]["outputs"] == record.outputs
    assert event["detail"]["metadata"] == {"caller_ref": job.job_id}
    for path in (p for p in downloads if f"/files/{job.submission.request_id}/" in p):
        assert downloads[path] == 1, path  # each output stored once


def _urls(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["url"]] if isinstance(node.get("url"), str) else []
        return found + [u for k, v in node.items() if k != "url" for u in _urls(v)]
    if isinstance(node, list):
        return [u for v in node for u in _urls(v)]
    return []


def test_error_and_payload_error_deliveries_end_in_the_right_state(
    completion_stack: CompletionStackFactory, fal_emulator: RunningEmulator, webhook_sink: WebhookSink
) -> None:
    stack = completion_stack(fal=fal_emulator)
    invalid = send(
        stack,
        fal_emulator,
        "invalid",
        "fal-ai/flux/dev",
        {"prompt": "x", "num_images": 99},
        webhook_base=webhook_sink.url,
    )
    fal_emulator.control.set_faults(job_error_rate=1.0)
    crashed = send(
        stack, fal_emulator, "crashed", "fal-ai/flux/dev", {"prompt": "x"}, webhook_base=webhook_sink.url
    )
    fal_emulator.control.wait_idle()
    fal_emulator.control.set_faults(payload_error_rate=1.0)
    unsent = send(
        stack,
        fal_emulator,
        "unsent",
        "fal-ai/stable-audio",
        {"prompt": "x", "seconds_total": 1},
        webhook_base=webhook_sink.url,
    )
    for job in (invalid, crashed):
        submit_write(stack, job)  # "unsent": the webhook beats the submit's write of the URLs
    deliveries = {d.headers["x-fal-webhook-request-id"]: d for d in webhook_sink.wait_for(3)}
    fal_emulator.control.wait_idle()

    for job in (invalid, crashed, unsent):
        assert replay(stack, webhook_sink, deliveries[job.submission.request_id]) == 200
    assert json.loads(deliveries[unsent.submission.request_id].body)["payload"] is None
    stack.drain_outputs()

    _assert_fals_errors_recorded_whole(stack)
    _assert_fetched_from_fals_queue(stack, fal_emulator, unsent)

    kinds = {e["detail"]["job_id"]: e["detail-type"] for e in stack.completion_events()}
    assert kinds == {"invalid": "Job Failed", "crashed": "Job Failed", "unsent": "Job Completed"}


def _assert_fals_errors_recorded_whole(stack: CompletionStack) -> None:
    """The ERROR deliveries: a validation error with fal's detail, and a runner crash."""
    validation = stack.job("invalid")
    assert validation.state is JobState.FAILED
    assert validation.error is not None
    assert validation.error.message == "Invalid status code: 422"
    assert validation.error.detail["detail"][0]["loc"] == ["body", "num_images"]  # fal's detail, whole
    assert validation.error.type == validation.error.detail["detail"][0]["type"]

    runner = stack.job("crashed")
    assert runner.state is JobState.FAILED
    assert runner.error is not None
    assert runner.error.type == "runner_server_error"


def _assert_fetched_from_fals_queue(
    stack: CompletionStack, fal_emulator: RunningEmulator, unsent: SentJob
) -> None:
    """The payload_error delivery: the result was fetched from fal's queue, once."""
    fetched = stack.job("unsent")
    assert fetched.state is JobState.COMPLETED
    assert fetched.response_url is None  # found through urls_for, the submit never wrote it
    assert [k.rsplit("/", 1)[1] for k in fetched.outputs] == ["audio.wav"]
    results = [r for r in fal_emulator.control.requests() if r.group == "result"]
    assert [r.path.rsplit("/", 1)[1] for r in results] == [unsent.submission.request_id]


class Origins:
    """Two loopback media servers: ``a`` (trusted) redirects ``/redirect`` to ``b``."""

    def __init__(self) -> None:
        self.requests: dict[str, list[str]] = {"a": [], "b": []}
        self.servers = {name: self._serve(name) for name in ("a", "b")}

    def _serve(self, name: str) -> ThreadingHTTPServer:
        origins = self

        class Serve(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origins.requests[name].append(self.path)
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("location", f"{origins.url('b')}/secret.png")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", "4")
                self.end_headers()
                self.wfile.write(b"\x89PNG")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.servers[name].server_address[1]}"

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


@pytest.fixture
def origins() -> Any:
    origins = Origins()
    yield origins
    origins.close()


ATTEMPTS = {
    "http url": lambda o: {"url": "http://v3.fal.media/files/x/image.png"},
    "private ip": lambda o: {"url": "https://10.0.0.8/files/x/image.png"},
    "instance metadata": lambda o: {
        "url": "https://169.254.169.254/latest/meta-data/iam/security-credentials/"
    },
    "redirect to another host": lambda o: {"url": f"{o.url('a')}/redirect"},
    "dot-dot name": lambda o: {
        "url": f"{o.url('a')}/files/x.png",
        "file_name": "../../other-job/result.json",
    },
    "encoded dot-dot in the url": lambda o: {"url": f"{o.url('a')}/files/..%2F..%2Fother-job%2Fx.png"},
}


def test_ssrf_and_path_attempts_are_refused_recorded_and_nothing_is_fetched(
    completion_stack: CompletionStackFactory, origins: Origins
) -> None:
    stack = completion_stack(env={"StoreFunction": {"MEDIA_ALLOW_LOCAL": f'["{origins.url("a")}"]'}})
    for i, (name, attempt) in enumerate(ATTEMPTS.items()):
        job_id, request_id = f"ssrf-{i}", f"req-ssrf-{i}"
        accept(stack, job_id, "fal-ai/flux/dev")
        body = delivery(request_id, payload={"images": [attempt(origins)]})
        assert stack.deliver(body, stack.signer.headers(body, request_id), job_id) == 200, name
    stack.drain_outputs()

    for i, name in enumerate(ATTEMPTS):
        job = stack.job(f"ssrf-{i}")
        assert job.state is JobState.FAILED, name
        assert job.error is not None
        assert job.error.type == "output_refused", name
        assert job.error.detail, name  # what was refused and why is on the record
        assert job.outputs == []
        assert stack.keys(f"outputs/ssrf-{i}/") == [], name
    assert origins.requests["b"] == []  # the other host never heard from us
    assert origins.requests["a"] == ["/redirect"]  # only the redirect itself was asked, nothing else
    refused = [e for e in stack.completion_events() if e["detail-type"] == "Job Failed"]
    assert len(refused) == len(ATTEMPTS)


def test_an_output_still_unfetchable_on_the_last_try_fails_the_job_with_its_reason_and_one_event(
    completion_stack: CompletionStackFactory, fal_emulator: RunningEmulator, webhook_sink: WebhookSink
) -> None:
    stack = completion_stack(fal=fal_emulator)
    job = send(
        stack, fal_emulator, "flaky-cdn", "fal-ai/flux/dev", {"prompt": "x"}, webhook_base=webhook_sink.url
    )
    submit_write(stack, job)
    (raw,) = webhook_sink.wait_for(1)
    assert replay(stack, webhook_sink, raw) == 200
    fal_emulator.control.set_faults(cdn={"rate_503": 1.0})  # the CDN keeps failing

    (record,) = stack.outputs_messages()
    assert stack.store([record]) == [record["messageId"]]  # an early try: back to the queue
    assert stack.job("flaky-cdn").state is JobState.STORING
    assert stack.completion_events() == []
    record["attributes"]["ApproximateReceiveCount"] = "5"  # the queue's maxReceiveCount
    assert stack.store([record]) == []  # the last try: the job's outcome, consumed

    failed = stack.job("flaky-cdn")
    assert failed.state is JobState.FAILED
    assert failed.error is not None
    assert failed.error.type == "output_unavailable"
    assert "503" in failed.error.message
    assert failed.store_lease_until is None
    assert stack.keys("outputs/flaky-cdn/") == []
    (event,) = stack.completion_events()
    assert event["detail-type"] == "Job Failed"
    assert event["detail"]["error"]["type"] == "output_unavailable"
    dlq = aws_client("sqs").receive_message(QueueUrl=stack.stack.queue("OutputsDLQ").url)
    assert dlq.get("Messages", []) == []  # a final job leaves nothing in the DLQ


def test_a_store_fault_on_the_last_try_dead_letters_the_message_and_says_so_on_the_job(
    completion_stack: CompletionStackFactory,
) -> None:
    stack = completion_stack()
    accept(stack, "lost-inbox", "fal-ai/flux/dev")
    body = delivery("req-lost-inbox", payload={"seed": 1})
    assert stack.deliver(body, stack.signer.headers(body, "req-lost-inbox"), "lost-inbox") == 200
    (record,) = stack.outputs_messages()
    completion_key = stack.job("lost-inbox").completion_key
    assert completion_key is not None
    aws_client("s3").delete_object(Bucket=stack.bucket, Key=completion_key)
    record["attributes"]["ApproximateReceiveCount"] = "5"
    assert stack.store([record]) == []

    dlq = aws_client("sqs").receive_message(
        QueueUrl=stack.stack.queue("OutputsDLQ").url, MessageAttributeNames=["All"]
    )["Messages"]
    assert [json.loads(m["Body"])["job_id"] for m in dlq] == ["lost-inbox"]
    job = stack.job("lost-inbox")
    assert job.state is JobState.STORING  # a redrive can finish it, and the record says so
    assert job.trail[-1].action == "dead_lettered"
    assert "outputs DLQ" in job.trail[-1].reason
