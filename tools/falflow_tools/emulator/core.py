"""``FalEmulator``: the emulated fal account, every part of the model wired together (jobs and
their runner, webhooks, uploads, keys, the catalogue, faults).

It knows nothing of HTTP serving: ``app.build_app`` puts fal's hosts in front of it and
``server.run_emulator`` serves that with uvicorn on loopback. State lives on the serving event
loop, between the start and end of ``running()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from falflow_tools.emulator.account import Account
from falflow_tools.emulator.acl import AccountStorage, FileAccess
from falflow_tools.emulator.auth import Auth
from falflow_tools.emulator.catalogue import Catalogue
from falflow_tools.emulator.config import ComputeInstance, EmulatorConfig
from falflow_tools.emulator.faults import FaultInjector
from falflow_tools.emulator.inputs import InputFetcher
from falflow_tools.emulator.media import MediaFile
from falflow_tools.emulator.runner import JobRunner
from falflow_tools.emulator.signing import KeyRing
from falflow_tools.emulator.state import EmulatorState, Stats
from falflow_tools.emulator.storage import UploadStore
from falflow_tools.emulator.urls import FalUrls
from falflow_tools.emulator.webhooks import WebhookDispatcher


class FalEmulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.urls = FalUrls(self.config.public_base_url or "http://127.0.0.1")
        self.state = EmulatorState(self.config.request_log_limit)
        self.auth = Auth(self.config)
        self.faults = FaultInjector(self.config.faults)
        self.keys = KeyRing()
        self.catalogue = Catalogue()
        self.uploads = UploadStore(self.config.storage_dir)
        self.storage = AccountStorage(known_users=frozenset({self.config.user_id}))
        self.account = Account(self.config.starting_balance_usd, self.config.lock_threshold_usd)
        self.compute = {i.id: i for i in self.config.compute_instances}
        # Idempotency-Key -> the instance it created (fal answers a repeated key with that one).
        self.created_instances: dict[str, ComputeInstance] = {}
        self.webhooks = WebhookDispatcher(self.config, self.state, self.keys, self.faults)
        self.inputs = InputFetcher(self.file_for_url, self.config.input_fetch_timeout_s)
        self.runner = JobRunner(
            self.config,
            self.state,
            self.faults,
            self.webhooks,
            inputs=self.inputs,
            account=self.account,
            files_url=lambda request_id: f"{self.urls.cdn_url}/files/{request_id}",
        )
        # Set when the server shuts down, so held ("timeout" fault) responses end at once.
        self.closing = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, base_url: str, backup_base_url: str | None = None) -> None:
        """Advertise ``base_url`` in response and file URLs (unless a public URL is configured);
        ``backup_base_url`` is the origin standing in for fal's backup hosts, if one is served."""
        public = self.config.public_base_url
        self.urls = FalUrls((public or base_url).rstrip("/"), backup_base_url)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The emulator's life on the serving event loop: webhooks and input downloads can be
        made inside it; leaving it ends held responses and pending jobs and webhooks."""
        self.closing = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # One client for webhook deliveries and input downloads (creating one loads CA certificates).
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self.inputs.start(http)
        self.webhooks.start(http)
        try:
            yield
        finally:
            self.closing.set()
            await self.runner.reset()
            await self.webhooks.reset()
            await http.aclose()

    def file(self, file_id: str, name: str) -> MediaFile | None:
        """A file on the CDN: a job's output (``file_id`` is its request id) or an upload."""
        job = self.state.jobs.get(file_id)
        if job is not None:
            return job.files.get(name)
        return self.uploads.get(file_id, name)

    def file_access(self, file_id: str, name: str) -> FileAccess:
        """A file's ACL and expiry: set on it since, or what its request (or upload) gave it."""
        key = (file_id, name)
        if key not in self.storage.files:
            job = self.state.jobs.get(file_id)
            if job is not None and job.completed_at is not None and name in job.files:
                self.storage.register(key, job.file_lifecycle, job.completed_at)
        return self.storage.access(key)

    def file_key(self, url: str) -> tuple[str, str] | None:
        """The (file id, name) of a CDN file URL, None for any other URL."""
        prefix = f"{self.urls.cdn_url}/files/"
        if not url.startswith(prefix):
            return None
        file_id, _, name = url[len(prefix) :].split("?", 1)[0].partition("/")
        return (file_id, name) if file_id and name else None

    def file_for_url(self, url: str) -> MediaFile | None:
        key = self.file_key(url)
        return None if key is None else self.file(*key)

    def stats(self) -> Stats:
        return Stats(
            jobs=len(self.state.jobs),
            pending_jobs=self.runner.pending,
            pending_webhooks=self.webhooks.pending,
            requests=len(self.state.requests),
        )

    async def reset(self) -> None:
        """Forget every job, request, webhook, upload and token; back to the configured faults and
        the starting balance, unlocked."""
        await self.runner.reset()
        await self.webhooks.reset()
        self.state.clear()
        self.uploads.clear()
        self.storage.clear()
        self.compute = {i.id: i for i in self.config.compute_instances}
        self.created_instances.clear()
        self.account.reset()
        self.auth.reset()
        self.faults.configure(self.config.faults)

    def request_close(self) -> None:
        """From any thread: end held responses now, the server is about to stop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.closing.set)

    def close(self) -> None:
        """Remove the uploads directory (after the server has stopped)."""
        self.uploads.close()
