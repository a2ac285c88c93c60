"""Running jobs: the queue wait, runner slots per app, the model itself, and how a job ends.

Each job is one asyncio task (no thread per job), so thousands can be in flight on two cores.
A job waits ``queue_wait_s``, then for a free runner of its app (normal priority before low, then
first come first served), then runs: the runner validates the input (422 on a bad one), downloads
its input URLs, works for ``run_time_s`` while logging, and produces the output. Failures end as
COMPLETED with an error, exactly like fal's queue; nothing is ever silently dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import time
from collections.abc import Callable
from typing import Literal

from falflow_tools.emulator.account import Account
from falflow_tools.emulator.catalogue import JSON, ModelError, RunContext
from falflow_tools.emulator.config import EmulatorConfig
from falflow_tools.emulator.faults import FaultInjector
from falflow_tools.emulator.inputs import InputFetcher
from falflow_tools.emulator.state import EmulatorState, Job, Outcome
from falflow_tools.emulator.webhooks import WebhookDispatcher

LARGE_RESULT_BYTES = 10_000  # fal keeps results of 10 KB or more for 6 minutes instead of 1 hour


def success(body: JSON, units: float) -> Outcome:
    return Outcome(200, body, headers={"X-Fal-Billable-Units": f"{units:g}"}, billed_units=units)


def model_failure(error: ModelError) -> Outcome:
    first = error.detail[0]
    return Outcome(
        422,
        {"detail": error.detail},
        headers={"X-Fal-Retryable": "false"},
        error=str(first["msg"]),
        error_type=str(first["type"]),
    )


def request_failure(status_code: int, error_type: str, detail: str, **headers: str) -> Outcome:
    """fal's infrastructure errors: ``{"detail", "error_type"}`` plus the X-Fal-Error-Type header."""
    return Outcome(
        status_code,
        {"detail": detail, "error_type": error_type},
        headers={"X-Fal-Error-Type": error_type, **headers},
        error=detail,
        error_type=error_type,
    )


def cancelled() -> Outcome:
    return request_failure(499, "client_cancelled", "Request was cancelled")


class AppSlots:
    """The runners of one app: at most ``capacity`` jobs in progress; waiting jobs get a runner in
    queue order (every normal-priority job before any low-priority one, then by arrival)."""

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiting: list[tuple[tuple[int, int], asyncio.Future[None]]] = []

    async def acquire(self, queue_key: tuple[int, int]) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (queue_key, granted))
        try:
            await granted
        except asyncio.CancelledError:
            # Cancelled just after the runner was handed over: give it to the next job.
            if granted.done() and not granted.cancelled():
                self.release()
            raise

    @property
    def free(self) -> int:
        return self._free

    def release(self) -> None:
        while self._waiting:
            _, granted = heapq.heappop(self._waiting)
            if not granted.done():  # skip jobs cancelled while they waited
                granted.set_result(None)
                return
        self._free += 1


class JobRunner:
    def __init__(
        self,
        config: EmulatorConfig,
        state: EmulatorState,
        faults: FaultInjector,
        webhooks: WebhookDispatcher,
        *,
        inputs: InputFetcher,
        account: Account,
        files_url: Callable[[str], str],
    ) -> None:
        self._config = config
        self._state = state
        self._faults = faults
        self._webhooks = webhooks
        self._inputs = inputs
        self._account = account
        self._files_url = files_url
        self._slots: dict[str, AppSlots] = {}
        self._queued: dict[str, dict[str, Job]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def start(self, job: Job) -> None:
        self._state.jobs[job.request_id] = job
        self._queued.setdefault(job.endpoint.app, {})[job.request_id] = job
        task = asyncio.create_task(self._run(job), name=f"job-{job.request_id}")
        self._tasks[job.request_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.request_id, None))

    def has_free_runner(self, app: str) -> bool:
        slots = self._slots.get(app)
        return slots is None or slots.free > 0

    def queue_length(self, app: str) -> int:
        return len(self._queued.get(app, {}))

    def queue_position(self, job: Job) -> int:
        """How many queued jobs of the same app will get a runner before this one (0 = next)."""
        return sum(
            other.queue_key < job.queue_key for other in self._queued.get(job.endpoint.app, {}).values()
        )

    def cancel(self, job: Job) -> Literal[202, 400]:
        """fal's cancel: a queued job is dropped; a running one is only signalled."""
        if job.status == "COMPLETED":
            return 400
        job.cancel_requested = True
        if job.status == "IN_QUEUE":
            self._finish(job, cancelled())
            task = self._tasks.get(job.request_id)
            if task is not None:
                task.cancel()
        return 202

    async def reset(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._slots.clear()
        self._queued.clear()

    async def _run(self, job: Job) -> None:
        slots = self._slots.setdefault(job.endpoint.app, AppSlots(self._config.concurrency))
        deadline = (
            None if job.start_timeout_s is None else asyncio.get_running_loop().time() + job.start_timeout_s
        )
        try:
            async with asyncio.timeout_at(deadline):
                if not job.sync:  # sync calls go straight to a runner
                    await asyncio.sleep(self._config.queue_wait_s)
                await slots.acquire(job.queue_key)
        except TimeoutError:
            # X-Fal-Request-Timeout bounds the time to start, and fal does not retry after it.
            self._finish(
                job,
                request_failure(
                    504,
                    "request_timeout",
                    "Request timed out before it could start",
                    **{"X-Fal-Request-Timeout-Type": "user"},
                ),
            )
            return
        except asyncio.CancelledError:
            if job.cancel_requested:  # dropped from the queue by cancel(), already finished
                return
            raise
        try:
            self._queued.get(job.endpoint.app, {}).pop(job.request_id, None)
            job.status = "IN_PROGRESS"
            job.started_at = time.time()
            self._finish(job, await self._execute(job))
        finally:
            slots.release()

    async def _execute(self, job: Job) -> Outcome:
        job.log(f"Starting {job.model.endpoint_id} on a warm runner")
        try:
            request = job.model.validate_input(job.payload)
            inputs = {
                name: await self._inputs.fetch(name, url)
                for name in job.model.url_fields
                if isinstance(url := getattr(request, name, None), str)
            }
            if not await self._work(job):
                return cancelled()
            if self._faults.chance("job_error", self._faults.config.job_error_rate):
                job.log("CUDA error: an illegal memory access was encountered", level="ERROR")
                return request_failure(500, "runner_server_error", "Internal error while running the model")
            context = RunContext(
                request_id=job.request_id,
                files_url=self._files_url(job.request_id),
                config=self._config,
                inputs=inputs,
                inference_time_s=self._config.run_time_s,
                rng=random.Random(job.request_id),  # noqa: S311 - seeds for fake outputs  # nosec B311
            )
            # Rendering an upscaled PNG is real CPU work; keep it off the event loop.
            generated = await asyncio.to_thread(job.model.generate, request, context)
        except ModelError as error:
            job.log(f"Validation failed: {error}", level="ERROR")
            return model_failure(error)
        job.files = {media.name: media for media in generated.files}
        job.log("Done")
        return success(generated.output, generated.units)

    async def _work(self, job: Job) -> bool:
        """Spend ``run_time_s`` "inferring", logging progress; False if stopped by a cancel."""
        steps = max(1, min(10, round(self._config.run_time_s / max(self._config.log_interval_s, 1e-3))))
        for step in range(1, steps + 1):
            await asyncio.sleep(self._config.run_time_s / steps)
            if job.cancel_requested and self._config.honour_cancel_in_progress:
                job.log("Cancelled while running", level="WARNING")
                return False
            job.log(f"Inference progress {100 * step // steps}%")
        return True

    def _finish(self, job: Job, outcome: Outcome) -> None:
        job.outcome = outcome
        job.status = "COMPLETED"
        job.completed_at = time.time()
        self._queued.get(job.endpoint.app, {}).pop(job.request_id, None)
        if job.store_io:
            retention = self._config.stored_result_retention_s
        elif len(json.dumps(outcome.body)) >= LARGE_RESULT_BYTES:
            retention = self._config.large_result_retention_s
        else:
            retention = self._config.result_retention_s
        job.result_expires_at = job.completed_at + retention
        if outcome.billed_units > 0:
            self._account.charge(job.billed_costs(self._config.percent_discount)["cost_total"])
        job.finished.set()
        if job.webhook_url is not None and not job.sync:
            self._webhooks.schedule(job)
