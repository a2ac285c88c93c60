"""Many jobs at once: asyncio timers, not threads, so hundreds pass through in seconds."""

from __future__ import annotations

import time

from tests.fixtures.fal_emulator import EmulatorFactory, WebhookSink
from tests.integration.emulator.helpers import key_client

JOBS = 200


def test_200_jobs_with_webhooks_pass_through_in_seconds(
    fal_emulator_factory: EmulatorFactory, webhook_sink: WebhookSink
) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.01, run_time_s=0.05, concurrency=64)
    started = time.monotonic()
    with key_client(fal) as client:
        request_ids = {
            client.post(
                f"{fal.urls.queue_url}/fal-ai/flux/dev",
                json={"prompt": f"cat {n}"},
                params={"fal_webhook": webhook_sink.url},
            ).json()["request_id"]
            for n in range(JOBS)
        }
    webhooks = webhook_sink.wait_for(JOBS, timeout_s=30)
    elapsed = time.monotonic() - started

    assert len(request_ids) == JOBS
    assert {hook.json()["request_id"] for hook in webhooks} == request_ids
    assert all(hook.json()["status"] == "OK" for hook in webhooks)
    jobs = fal.control.jobs()
    assert {job.status for job in jobs} == {"COMPLETED"}
    assert sum(job.billed_units for job in jobs) == JOBS
    assert all([attempt.outcome for attempt in job.deliveries] == ["delivered"] for job in jobs)
    assert elapsed < 10, f"{JOBS} jobs took {elapsed:.1f} s"
