"""Webhook deliveries shaped, signed and retried like fal's (docs/fal-contract.md §3), with the run's faults.

A delivery POSTs ``{request_id, gateway_request_id, status: OK|ERROR, payload, ...}`` to the
``fal_webhook`` URL with the four ``X-Fal-Webhook-*`` headers, waits ``webhook_timeout_s`` for the
reply and retries a non-2xx or a timeout up to ``webhook_max_retries`` times with backoff. Faults
drop, delay, duplicate or reorder deliveries.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Literal

import httpx

from falflow_tools.emulator.catalogue import JSON
from falflow_tools.emulator.config import EmulatorConfig
from falflow_tools.emulator.faults import FaultInjector
from falflow_tools.emulator.signing import KeyRing
from falflow_tools.emulator.state import DeliveryOutcome, EmulatorState, Job, WebhookAttempt

PAYLOAD_ERROR = "Failed to serialize the response payload; fetch the result from the queue instead."


def webhook_body(job: Job, *, payload_error: bool) -> JSON:
    """The JSON fal posts when ``job`` ends."""
    outcome = job.outcome
    assert outcome is not None, "a webhook is only sent for a finished job"
    ids = {"request_id": job.request_id, "gateway_request_id": job.gateway_request_id}
    if not outcome.ok:
        return {
            **ids,
            "status": "ERROR",
            "error": f"Invalid status code: {outcome.status_code}",
            "payload": outcome.body,
        }
    if payload_error:
        return {**ids, "status": "OK", "payload": None, "payload_error": PAYLOAD_ERROR}
    return {**ids, "status": "OK", "payload": outcome.body}


class WebhookDispatcher:
    def __init__(
        self, config: EmulatorConfig, state: EmulatorState, keys: KeyRing, faults: FaultInjector
    ) -> None:
        self._config = config
        self._state = state
        self._keys = keys
        self._faults = faults
        self._client: httpx.AsyncClient | None = None
        self._sending: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Reordered deliveries wait here until a later delivery has been sent.
        self._parked: list[asyncio.Event] = []

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def start(self, client: httpx.AsyncClient) -> None:
        """On the serving event loop (the semaphore belongs to it)."""
        self._client = client
        self._sending = asyncio.Semaphore(self._config.webhook_concurrency)

    async def reset(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._parked.clear()

    def schedule(self, job: Job) -> None:
        task = asyncio.create_task(self._deliver(job), name=f"webhook-{job.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job: Job) -> None:
        assert job.webhook_url is not None
        faults = self._faults.config.webhook
        payload_error = (
            job.outcome is not None
            and job.outcome.ok
            and self._faults.chance("payload_error", self._faults.config.payload_error_rate)
        )
        body = webhook_body(job, payload_error=payload_error)
        if self._faults.chance("webhook:drop", faults.drop_rate):
            self._record(job, body, "original", 0, "dropped")
            return
        if self._faults.chance("webhook:delay", faults.delay_rate):
            await asyncio.sleep(faults.delay_s)
        if self._faults.chance("webhook:reorder", faults.reorder_rate):
            await self._park(faults.reorder_max_hold_s)
            delivered = await self._send_with_retries(job, body, "original")
        else:
            delivered = await self._send_with_retries(job, body, "original", release_parked=True)
        if delivered and self._faults.chance("webhook:duplicate", faults.duplicate_rate):
            await self._send_with_retries(job, body, "duplicate")

    async def _park(self, max_hold_s: float) -> None:
        released = asyncio.Event()
        self._parked.append(released)
        try:
            await asyncio.wait_for(released.wait(), max_hold_s)
        except TimeoutError:
            pass
        finally:
            if released in self._parked:
                self._parked.remove(released)

    def _release_parked(self) -> None:
        for released in self._parked:
            released.set()
        self._parked.clear()

    async def _send_with_retries(
        self,
        job: Job,
        body: JSON,
        delivery: Literal["original", "duplicate"],
        *,
        release_parked: bool = False,
    ) -> bool:
        raw = json.dumps(body, separators=(",", ":")).encode()
        config = self._config
        for attempt in range(1, config.webhook_max_retries + 2):
            outcome = await self._attempt(job, body, raw, delivery, attempt)
            if release_parked and attempt == 1:
                self._release_parked()
            if outcome == "delivered":
                return True
            if attempt <= config.webhook_max_retries:
                backoff = config.webhook_backoff_s * config.webhook_backoff_factor ** (attempt - 1)
                await asyncio.sleep(min(backoff, config.webhook_backoff_cap_s))
        return False

    async def _attempt(
        self, job: Job, body: JSON, raw: bytes, delivery: Literal["original", "duplicate"], attempt: int
    ) -> DeliveryOutcome:
        assert self._sending is not None
        async with self._sending:  # signed when it is sent, as fal signs each attempt
            return await self._send(job, body, raw, delivery, attempt)

    async def _send(
        self, job: Job, body: JSON, raw: bytes, delivery: Literal["original", "duplicate"], attempt: int
    ) -> DeliveryOutcome:
        assert self._client is not None
        assert job.webhook_url is not None
        timestamp = str(int(time.time()))
        user_id = self._config.user_id
        kid = self._keys.current.kid
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "fal-webhook/emulator",
            "X-Fal-Webhook-Request-Id": job.request_id,
            "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": timestamp,
            "X-Fal-Webhook-Signature": self._keys.sign(job.request_id, user_id, timestamp, raw),
        }
        status_code: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(
                job.webhook_url, content=raw, headers=headers, timeout=self._config.webhook_timeout_s
            )
            status_code = response.status_code
            outcome: DeliveryOutcome = "delivered" if response.is_success else "http_error"
        except httpx.TimeoutException as exc:
            outcome, error = "timeout", type(exc).__name__
        except httpx.HTTPError as exc:
            outcome, error = "connection_error", type(exc).__name__
        self._record(job, body, delivery, attempt, outcome, status_code=status_code, kid=kid, error=error)
        return outcome

    def _record(
        self,
        job: Job,
        body: JSON,
        delivery: Literal["original", "duplicate"],
        attempt: int,
        outcome: DeliveryOutcome,
        *,
        status_code: int | None = None,
        kid: str | None = None,
        error: str | None = None,
    ) -> None:
        assert job.webhook_url is not None
        self._state.webhook_attempts.append(
            WebhookAttempt(
                request_id=job.request_id,
                url=job.webhook_url,
                delivery=delivery,
                attempt=attempt,
                at=time.time(),
                outcome=outcome,
                status_code=status_code,
                payload_status=body["status"],
                payload_error="payload_error" in body,
                signing_kid=kid,
                error=error,
            )
        )
