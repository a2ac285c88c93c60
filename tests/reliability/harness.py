"""One reliability run: the local stack under fal's faults, a mixed workload, optional kills.

The faults are the emulator's own (`falflow_tools.emulator.faults`), set as fal would misbehave;
what the emulator cannot do (AWS delivering an S3 notification twice, a worker SIGKILLed) is done
here, to the real moto server and the real worker processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from falflow.completion.finalise import DEFAULT_RECEIPT_WINDOW_S
from falflow.submit.sources import message_job_id
from falflow_tools.emulator import EmulatorConfig, FaultConfig, HttpFaults, WebhookFaults
from falflow_tools.emulator.media import render_png
from falflow_tools.local.stack import LocalStack, LocalStackConfig
from falflow_tools.ops.submit import drop_file, job_message
from falflow_tools.ops.target import Target
from tests.reliability.accounting import scan_settled

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

# fal's submit misbehaving: 20% of submits, every way fal's queue is known to fail. A "timeout"
# is answered after the client gave up, and "reset_after" / "proxy_504_after" drop the reply or
# answer a proxy 504 after fal queued the request: in all three fal has the job, the reply is lost.
# Faults the emulator adds later go here, in this one place.
SUBMIT_FAULTS = HttpFaults(
    rate_429=0.04,
    rate_500=0.03,
    rate_503=0.03,
    rate_timeout=0.04,
    rate_reset=0.02,
    rate_reset_after=0.02,
    rate_proxy_504_after=0.02,
    timeout_hold_s=1.5,
)
# The submit function gives up on a reply after this long (less than the hold above).
SUBMIT_READ_TIMEOUT_S = 1.0


def fault_mix(seed: int) -> FaultConfig:
    """Everything at once: submit faults, lost/duplicated/reordered webhooks, a slow flaky CDN."""
    return FaultConfig(
        seed=seed,
        submit=SUBMIT_FAULTS,
        status=HttpFaults(rate_500=0.05, rate_reset=0.02),
        result=HttpFaults(rate_503=0.05),
        cdn=HttpFaults(rate_503=0.04, rate_reset=0.02),
        # 30% of completions never delivered: only the reconciler can find those jobs.
        webhook=WebhookFaults(
            drop_rate=0.3, duplicate_rate=0.25, reorder_rate=0.2, delay_rate=0.1, delay_s=0.5
        ),
        job_error_rate=0.03,
        cdn_bytes_per_s=2_000_000,
    )


@dataclass(frozen=True)
class RunPlan:
    jobs: int
    kills: bool = False
    seed: int = 10


def stack_config(home: Path) -> LocalStackConfig:
    return LocalStackConfig(
        # Faults come back in seconds; the submit's grace stays below the intake's visibility.
        visibility_timeout_s=4,
        parameters={
            # The template's 10 minutes, scaled as the visibility is (360 s to 4 s).
            "ReconcileAfterMinutes": "0.11",
            "SubmitAmbiguousGraceSeconds": "2",
        },
        schedule_intervals_s={"ReconcileFunction": 3.0, "CollectFunction": 0},
        # Lambda would scale the webhook out; here it has a fixed pool, so a wide one: fal gives a
        # delivery 15 s, and a burst of completions queued behind three workers outwaited that.
        concurrency={"SubmitFunction": 4, "WebhookFunction": 6, "StoreFunction": 3},
        environment={"SubmitFunction": {"FAL_READ_TIMEOUT_S": str(SUBMIT_READ_TIMEOUT_S)}},
        emulator=EmulatorConfig(
            queue_wait_s=0.05, run_time_s=0.3, webhook_backoff_s=0.05, request_log_limit=500_000
        ),
        log_dir=home / "logs",
        state_file=home / "local.json",
        # Eight cold starts at once on a shared 2-core machine take a while.
        init_timeout_s=180.0,
        # S3 delivers event notifications at least once: here, always twice.
        s3_notification_copies=2,
    )


KINDS = ("media drop", "job document", "message", "message without job_id", "video message")


@dataclass
class Workload:
    """Jobs of every kind the pipeline takes, sent the ways producers send them."""

    plan: RunPlan
    job_ids: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)

    def send(self, target: Target) -> None:
        messages: list[tuple[str, dict[str, Any]]] = []
        for index in range(self.plan.jobs):
            tag = f"rel-{self.plan.seed}-{index}"
            kind = KINDS[index % len(KINDS)]
            if kind == "media drop":
                png = render_png(32 + index % 7, 24, index)
                dropped = drop_file(target, png, key=f"upscale/{tag}.png", content_type="image/png")
                self._add(dropped.job_id, kind)
            elif kind == "job document":
                document = {"model": "fal-ai/stable-audio", "input": {"prompt": tag, "seconds_total": 1}}
                dropped = drop_file(target, json.dumps(document).encode(), key=f"jobs/{tag}.json")
                self._add(dropped.job_id, kind)
            elif kind == "message":
                body = {"prompt": tag, "num_images": 1 + index % 2}
                messages.append((kind, job_message("fal-ai/flux/dev", body, job_id=tag)))
            elif kind == "message without job_id":
                unnamed = job_message("fal-ai/flux/dev", {"prompt": tag}, metadata={"n": index})
                messages.append((kind, unnamed))
            else:
                video = job_message("fal-ai/kling-video/v2/master/text-to-video", {"prompt": tag}, job_id=tag)
                messages.append((kind, video))
        self._send_messages(target, messages)

    def _add(self, job_id: str, kind: str) -> None:
        self.job_ids.append(job_id)
        self.kinds[job_id] = kind

    def _send_messages(self, target: Target, messages: list[tuple[str, dict[str, Any]]]) -> None:
        queue_url = target.output("IntakeQueueUrl")
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            bodies = [json.dumps(message) for _, message in batch]
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies)
            ]
            sent = target.sqs().send_message_batch(QueueUrl=queue_url, Entries=entries)
            assert not sent.get("Failed"), sent["Failed"]
            for (kind, message), body in zip(batch, bodies, strict=True):
                self._add(message.get("job_id") or message_job_id(body, message), kind)


class WorkerKiller:
    """SIGKILLs a busy submit or store worker process (one in the middle of an invocation) every
    few seconds while the batch runs, up to `max_kills` each; the stack replaces a dead worker on
    its next invocation, as Lambda does. Spaced so a replaced worker gets work done in between."""

    functions = ("SubmitFunction", "StoreFunction")

    def __init__(self, stack: LocalStack, seed: int, *, max_kills: int = 8) -> None:
        self._stack = stack
        self._rng = random.Random(f"{seed}:kills")
        self._max_kills = max_kills
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-killer", daemon=True)
        self.kills: dict[str, int] = dict.fromkeys(self.functions, 0)

    def __enter__(self) -> WorkerKiller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._rng.uniform(3.0, 6.0)):
            name = self._rng.choice(self.functions)
            if self.kills[name] >= self._max_kills:
                continue
            busy = [w.pid for w in self._stack.functions[name].workers if w.busy and w.pid is not None]
            if not busy:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._rng.choice(busy), signal.SIGKILL)
                self.kills[name] += 1


def wait_until_settled(
    stack: LocalStack,
    job_ids: list[str],
    *,
    enough: float = 1.0,
    deadline_s: float = 1800.0,
) -> None:
    """Wait until `enough` of the jobs (a fraction) are final and announced, or none settled for
    longer than a publisher's claim on an event can hold one (the receipt window, and a margin), or
    the deadline passed. What is not settled then is for the accounting to show."""
    quiet_s = max(90.0, receipt_window(stack) + 60.0)
    started = time.monotonic()
    table = stack.outputs()["JobsTableName"]
    last_settled, last_change = -1, started
    while time.monotonic() - started < deadline_s:
        settled = len(scan_settled(stack.dynamodb(), table).intersection(job_ids))
        if settled >= enough * len(job_ids):
            return
        if settled != last_settled:
            last_settled, last_change = settled, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return
        time.sleep(2.0)


def receipt_window(stack: LocalStack) -> float:
    """How long the stack's publishers hold a claim on an event (falflow.completion.finalise)."""
    environment = stack.functions["StoreFunction"].runtime.environment
    return float(environment.get("EVENT_RECEIPT_WINDOW_SECONDS", DEFAULT_RECEIPT_WINDOW_S))
