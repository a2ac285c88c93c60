"""The queue (``queue.fal.run``) and sync (``fal.run``) hosts, per docs/fal-contract.md §2.

Submit takes the full endpoint id; status, result and cancel take the app only and answer 404
for a path with the subpath in it, as fal does. Statuses go IN_QUEUE -> IN_PROGRESS ->
COMPLETED (202 until then, 200 after); a failure is COMPLETED with ``error``/``error_type`` and
its result answers the model's own status and body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from falflow_tools.emulator.acl import Lifecycle
from falflow_tools.emulator.catalogue import JSON, ModelSpec
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.endpoints import EndpointId, RequestPath, parse_request_path
from falflow_tools.emulator.errors import (
    account_locked,
    concurrency_limited,
    fal_error,
    request_error,
    unauthorized,
)
from falflow_tools.emulator.state import Job

MIN_REQUEST_TIMEOUT_S = 0.1  # fal rejects smaller X-Fal-Request-Timeout values
_TRUE = ("1", "true", "yes")


class _BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _not_found() -> Response:
    return fal_error(404, "Not Found")


def _app_of(path: str) -> str:
    """Owner/alias (with any namespace) of a queue path, for messages."""
    try:
        return EndpointId.parse(path).app
    except ValueError:
        return path


def queue_routes(emulator: FalEmulator) -> list[Route]:
    """The queue and sync hosts' routes, running jobs on ``emulator``."""
    api = QueueApi(emulator)
    return [
        Route("/queue/{path:path}", api.submit, methods=["POST"]),
        Route("/queue/{path:path}", api.request, methods=["GET", "PUT"]),
        Route("/run/{path:path}", api.run, methods=["POST"]),
    ]


class QueueApi:
    def __init__(self, emulator: FalEmulator) -> None:
        self._emulator = emulator

    # ------------------------------------------------------------------ submit and run

    async def submit(self, request: Request) -> Response:
        try:
            job = await self._new_job(request, sync=False)
        except _BadRequest as bad:
            return bad.response
        limit = request.query_params.get("fal_max_queue_length")
        if limit is not None:
            if not limit.isdigit():
                return request_error(
                    400, "bad_request", "fal_max_queue_length must be a non-negative integer"
                )
            if self._emulator.runner.queue_length(job.endpoint.app) >= int(limit):
                return fal_error(429, f"Queue of {job.endpoint.app} is longer than {limit} requests")
        runner = self._emulator.runner
        runner.start(job)
        return JSONResponse(
            {
                "status": "IN_QUEUE",
                "request_id": job.request_id,
                "gateway_request_id": job.gateway_request_id,
                **self._urls(job),
                "queue_position": runner.queue_position(job),
            },
            headers={"x-fal-request-id": job.request_id},
        )

    async def run(self, request: Request) -> Response:
        try:
            job = await self._new_job(request, sync=True)
        except _BadRequest as bad:
            return bad.response
        if not self._emulator.runner.has_free_runner(job.endpoint.app):
            return concurrency_limited()  # sync calls bypass the queue, so they cannot wait in it
        self._emulator.runner.start(job)
        await job.finished.wait()
        return self._result_response(job)

    async def _new_job(self, request: Request, *, sync: bool) -> Job:
        path = request.path_params["path"]
        principal = self._emulator.auth.identify(request.headers.get("authorization"))
        if not principal.is_key:
            raise _BadRequest(unauthorized(principal, _app_of(path)))
        if (reason := self._emulator.account.lock_reason) is not None:
            raise _BadRequest(account_locked(reason))  # billable; status, result and cancel are not
        model = self._model(path)
        try:
            payload = json.loads(await request.body())
        except ValueError as exc:
            detail = [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json_invalid"}]
            raise _BadRequest(fal_error(422, detail)) from exc
        headers = request.headers
        priority = headers.get("x-fal-queue-priority", "normal")
        if priority not in ("normal", "low"):
            raise _BadRequest(request_error(400, "bad_request", "X-Fal-Queue-Priority must be normal or low"))
        webhook = None if sync else request.query_params.get("fal_webhook")
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            raise _BadRequest(request_error(400, "bad_request", "fal_webhook must be an http(s) URL"))
        try:
            lifecycle = Lifecycle.from_header(headers.get("x-fal-object-lifecycle-preference"))
        except ValueError as exc:
            raise _BadRequest(request_error(400, "bad_request", str(exc))) from exc
        request_id = str(uuid.uuid4())
        retried = self._emulator.faults.chance(
            "gateway_retry", self._emulator.faults.config.gateway_retry_rate
        )
        assert principal.key_id is not None
        # fal's reliability page names x-fal-disable-fallbacks; its headers page (per the
        # research notes) x-app-fal-disable-fallback. Either turns fallbacks off here.
        fallbacks_allowed = not any(
            headers.get(name, "").lower() in _TRUE
            for name in ("x-fal-disable-fallbacks", "x-app-fal-disable-fallback")
        )
        equivalent = self._emulator.config.model_fallbacks.get(model.endpoint_id)
        rerouted = (
            fallbacks_allowed
            and equivalent is not None
            and self._emulator.faults.chance("fallback", self._emulator.faults.config.fallback_rate)
        )
        return Job(
            request_id=request_id,
            gateway_request_id=str(uuid.uuid4()) if retried else request_id,
            endpoint=EndpointId.parse(model.endpoint_id),
            model=model,
            payload=payload,
            api_key_id=principal.key_id,
            webhook_url=webhook,
            priority="low" if priority == "low" else "normal",
            start_timeout_s=_start_timeout(headers.get("x-fal-request-timeout")),
            store_io=headers.get("x-fal-store-io", "1").lower() not in ("0", "false", "no"),
            runner_hint=headers.get("x-fal-runner-hint"),
            file_lifecycle=self._emulator.storage.for_new_file(lifecycle),
            fallbacks_allowed=fallbacks_allowed,
            served_from=equivalent if rerouted else None,
            sync=sync,
        )

    def _model(self, path: str) -> ModelSpec:
        try:
            endpoint = EndpointId.parse(path)
        except ValueError as exc:
            raise _BadRequest(_not_found()) from exc
        model = self._emulator.catalogue.get(str(endpoint))
        if model is None:
            raise _BadRequest(fal_error(404, f"Application '{endpoint}' not found"))
        return model

    # ------------------------------------------------------------------ status, result, cancel

    async def request(self, request: Request) -> Response:
        path = request.path_params["path"]
        principal = self._emulator.auth.identify(request.headers.get("authorization"))
        if not principal.is_key:
            return unauthorized(principal, _app_of(path))
        target = parse_request_path(path)
        if target is None:
            return _not_found()
        if (request.method == "PUT") != (target.action == "cancel"):
            return fal_error(405, "Method Not Allowed")
        job = self._job(target)
        if target.action == "cancel":
            if job is None:
                return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
            if self._emulator.runner.cancel(job) == 400:
                return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
            return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
        if job is None:
            return fal_error(404, "Request not found")
        with_logs = request.query_params.get("logs", "0").lower() in _TRUE
        if target.action == "status":
            return JSONResponse(
                self._status(job, with_logs=with_logs),
                status_code=200 if job.status == "COMPLETED" else 202,
                headers={"x-fal-request-id": job.request_id},
            )
        if target.action == "stream":
            return StreamingResponse(
                self._status_events(job, with_logs=with_logs), media_type="text/event-stream"
            )
        if job.status != "COMPLETED":
            return fal_error(400, "Request is still in progress")
        expired = job.result_expires_at is not None and time.time() >= job.result_expires_at
        if expired or job.payloads_deleted:
            return fal_error(404, "Request not found")
        return self._result_response(job)

    def _job(self, target: RequestPath) -> Job | None:
        job = self._emulator.state.jobs.get(target.request_id)
        if job is None or job.sync or job.endpoint.app != target.app:
            return None
        return job

    def _urls(self, job: Job) -> dict[str, str]:
        response_url = f"{self._emulator.urls.queue_url}/{job.endpoint.app}/requests/{job.request_id}"
        return {
            "response_url": response_url,
            "status_url": f"{response_url}/status",
            "cancel_url": f"{response_url}/cancel",
        }

    def _status(self, job: Job, *, with_logs: bool) -> JSON:
        body: dict[str, Any] = {"status": job.status, "request_id": job.request_id, **self._urls(job)}
        # fal's clients read "logs" unconditionally, so it is always present (null without ?logs=1).
        body["logs"] = list(job.logs) if with_logs else None
        if job.status == "IN_QUEUE":
            body["queue_position"] = self._emulator.runner.queue_position(job)
        elif job.status == "COMPLETED":
            outcome = job.outcome
            assert outcome is not None
            assert job.completed_at is not None
            started = job.started_at
            body["metrics"] = {} if started is None else {"inference_time": job.completed_at - started}
            if not outcome.ok:
                body["error"] = outcome.error
                body["error_type"] = outcome.error_type
        return body

    async def _status_events(self, job: Job, *, with_logs: bool) -> AsyncIterator[str]:
        """Server-sent events: the status whenever it changes, until COMPLETED."""
        last = ""
        while True:
            event = json.dumps(self._status(job, with_logs=with_logs))
            if event != last:
                yield f"data: {event}\n\n"
                last = event
            if job.status == "COMPLETED":
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.finished.wait(), self._emulator.config.status_stream_interval_s)

    @staticmethod
    def _result_response(job: Job) -> Response:
        outcome = job.outcome
        assert outcome is not None
        return JSONResponse(
            outcome.body,
            status_code=outcome.status_code,
            headers={
                "x-fal-request-id": job.request_id,
                "x-fal-served-from": job.served_from or str(job.endpoint),
                **outcome.headers,
            },
        )


def _start_timeout(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds <= MIN_REQUEST_TIMEOUT_S:
        raise _BadRequest(
            request_error(
                400, "bad_request", f"X-Fal-Request-Timeout must be more than {MIN_REQUEST_TIMEOUT_S} s"
            )
        )
    return seconds
