from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from falflow.aws.s3 import S3ObjectRef
from falflow.jobs import Job
from falflow.spend.estimate import Estimator
from falflow.spend.gate import SpendGate
from falflow.submit.files import InputFiles
from falflow.submit.plan import Planner
from falflow.submit.request import FalDefaults
from falflow.submit.routes import RouteTable
from falflow.submit.service import SubmitConfig, SubmitService
from falflow.submit.settings import SubmitSettings
from falflow.submit.sources import JobMessage, ObjectCreated
from tests.fakes.job_store import InMemoryJobStore
from tests.fakes.webhook_events import fixed_tokens
from tests.unit.submit.fakes import (
    Clock,
    FakeArchive,
    FakeCatalogue,
    FakeFalQueue,
    FakeObjects,
    FakeRequestHistory,
    FakeStorage,
)

BUCKET = "falflow-inputbucket"
WEBHOOK = "https://abc123.execute-api.us-east-1.amazonaws.com/webhooks/fal"
GRACE_S = 300
# SUBMIT_LEASE_SECONDS as the template leaves it (the setting's default).
WORKER_LEASE_S = float(SubmitSettings.model_fields["submit_lease_seconds"].default)
PRESIGN_S = 21600
ROUTES = RouteTable.model_validate(
    {
        "upscale/": {
            "model": "fal-ai/clarity-upscaler",
            "input": {"image_url": "{file_url}", "upscale_factor": 2},
            "max_bytes": 1000,
        },
        "upscale/cdn/": {
            "model": "fal-ai/clarity-upscaler",
            "input": {"image_url": "{file_url}"},
            "file_via": "fal_cdn",
            "output_prefix": "cdn",
        },
        "animate/": {
            "model": "fal-ai/kling-video/v2/master/text-to-video",
            "input": {"prompt": "{file_text}", "duration": "5"},
            "max_bytes": 100,
            "priority": "low",
            "metadata": {"team": "motion"},
        },
        "private/": {
            "model": "fal-ai/clarity-upscaler",
            "input": {"image_url": "{file_url}"},
            "store_io": False,
            "private_outputs": True,
            "output_expiry_seconds": 3600,
            "delete_payloads": True,
            "allow_fallbacks": True,
        },
    }
)


@dataclass
class Harness:
    store: InMemoryJobStore = field(default_factory=InMemoryJobStore)
    fal: FakeFalQueue = field(default_factory=FakeFalQueue)
    objects: FakeObjects = field(default_factory=FakeObjects)
    storage: FakeStorage = field(default_factory=FakeStorage)
    catalogue: FakeCatalogue = field(default_factory=lambda: FakeCatalogue(loaded=False))
    archive: FakeArchive = field(default_factory=FakeArchive)
    clock: Clock = field(default_factory=Clock)
    max_inline_input_bytes: int = 64 * 1024
    grace_s: float = GRACE_S
    worker_lease_s: float = WORKER_LEASE_S
    correlated: list[str] = field(default_factory=list)
    correlate: Callable[[str], None] | None = None
    fal_defaults: FalDefaults = field(default_factory=FalDefaults)
    estimator: Estimator | None = None
    gate: SpendGate | None = None
    history: FakeRequestHistory = field(init=False)

    def __post_init__(self) -> None:
        self.history = FakeRequestHistory(self.fal)
        self.fal.clock = self.clock

    @property
    def service(self) -> SubmitService:
        return SubmitService(
            store=self.store,
            fal=self.fal,
            planner=Planner(ROUTES, "jobs/", self.objects, input_buckets=[BUCKET]),
            files=InputFiles(
                self.objects, self.storage, input_bucket=BUCKET, presign_expiry_seconds=PRESIGN_S
            ),
            config=SubmitConfig(
                webhook_url=WEBHOOK,
                ambiguous_grace=timedelta(seconds=self.grace_s),
                worker_lease=timedelta(seconds=self.worker_lease_s),
                max_inline_input_bytes=self.max_inline_input_bytes,
                fal_defaults=self.fal_defaults,
            ),
            tokens=fixed_tokens(),
            archive=self.archive,
            catalogue=self.catalogue,
            history=self.history,
            estimator=self.estimator,
            gate=self.gate,
            clock=self.clock,
            correlate=self.correlate or self.correlated.append,
        )

    def drop(
        self,
        key: str,
        data: bytes = b"\x89PNG fake",
        *,
        version: str | None = "v1",
        content_type: str = "image/png",
    ) -> ObjectCreated:
        ref = self.objects.put(BUCKET, key, data, content_type=content_type, version_id=version)
        return ObjectCreated(object=ref, etag="etag-" + key, size=len(data))

    def document(self, key: str, body: Any, *, version: str | None = "v1") -> ObjectCreated:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.drop(key, raw, version=version, content_type="application/json")

    def job(self, job_id: str | None) -> Job:
        assert job_id is not None
        job = self.store.get(job_id)
        assert job is not None, f"no job record {job_id}"
        return job


def message(body: Any, message_id: str = "m-1") -> JobMessage:
    return JobMessage(body=body if isinstance(body, str) else json.dumps(body), message_id=message_id)


def ref(key: str, version: str | None = None) -> S3ObjectRef:
    return S3ObjectRef(BUCKET, key, version)


@pytest.fixture
def harness() -> Harness:
    return Harness()
