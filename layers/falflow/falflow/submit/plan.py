"""From a source to a job plan: which job it is and what it asks fal for.

Three request forms meet here: a media drop under a routed prefix, a JSON job document under the
jobs prefix, and a job message. A request that can never succeed raises `PlanRejectedError`
carrying the job it belongs to, so even a malformed message leaves a REJECTED record behind.
An S3 notification is taken only for the stack's input bucket: one naming any other bucket (forged,
or a misrouted subscription) is REJECTED as ``foreign_bucket`` before anything is read from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

from falflow.aws.s3 import S3ObjectRef
from falflow.jobs.model import SourceKind
from falflow.submit.objects import InputObjects
from falflow.submit.request import (
    FAL_OPTION_FIELDS,
    JobRequest,
    RequestRejectedError,
    job_id_hint,
    validate_request,
)
from falflow.submit.routes import Route, RouteTable
from falflow.submit.sources import JobMessage, JobSource, ObjectCreated, message_job_id, object_job_id

# Job documents are small JSON; a larger object under the jobs prefix is a mistake, not a job.
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
DOCUMENT_SUFFIX: Final = ".json"


@dataclass(frozen=True)
class JobIdentity:
    job_id: str
    source: str
    source_kind: SourceKind


@dataclass(frozen=True)
class JobPlan:
    identity: JobIdentity
    request: JobRequest
    # Set for media drops: the route and the dropped file its placeholders refer to.
    route: Route | None = None
    route_prefix: str | None = None
    dropped: S3ObjectRef | None = None
    # Set for job documents: the request already lives in S3 (a large input needs no copy).
    document: S3ObjectRef | None = None

    @property
    def job_id(self) -> str:
        return self.identity.job_id


class PlanRejectedError(Exception):
    def __init__(
        self, identity: JobIdentity, rejected: RequestRejectedError, model: str | None = None
    ) -> None:
        super().__init__(str(rejected))
        self.identity = identity
        self.error = rejected.error
        self.model = model


class Planner:
    def __init__(
        self, routes: RouteTable, jobs_prefix: str, objects: InputObjects, *, input_buckets: Collection[str]
    ) -> None:
        self._routes = routes
        self._jobs_prefix = jobs_prefix
        self._objects = objects
        self._input_buckets = frozenset(input_buckets)

    def plan(self, source: JobSource) -> JobPlan | None:
        """The job a source asks for; None when it is no job (a folder marker)."""
        if isinstance(source, JobMessage):
            return self._plan_message(source)
        if source.object.key.endswith("/"):
            return None  # "create folder" in the console writes an empty object named like a prefix
        document = source.object.key.startswith(self._jobs_prefix)
        if source.object.bucket not in self._input_buckets:
            raise self._foreign_bucket(source, "s3_document" if document else "s3_media")
        if document:
            return self._plan_document(source)
        return self._plan_drop(source)

    def _foreign_bucket(self, created: ObjectCreated, kind: SourceKind) -> PlanRejectedError:
        ref = created.object
        return PlanRejectedError(
            JobIdentity(object_job_id(created), ref.uri, kind),
            RequestRejectedError(
                "foreign_bucket",
                f"the notification names bucket {ref.bucket!r}, not the input bucket "
                f"({', '.join(sorted(self._input_buckets))}); nothing was read from it",
            ),
        )

    def _plan_message(self, message: JobMessage) -> JobPlan:
        source = f"sqs:{message.message_id}"
        try:
            data = json.loads(message.body)
        except ValueError as error:
            identity = JobIdentity(message_job_id(message.body), source, "sqs")
            rejected = RequestRejectedError("malformed_json", f"the message body is not JSON: {error}")
            raise PlanRejectedError(identity, rejected) from error
        fallback_id = message_job_id(message.body, data)
        request = _validated(data, lambda job_id: JobIdentity(job_id or fallback_id, source, "sqs"))
        return JobPlan(identity=JobIdentity(request.job_id or fallback_id, source, "sqs"), request=request)

    def _plan_document(self, created: ObjectCreated) -> JobPlan:
        ref = created.object
        object_identity = JobIdentity(object_job_id(created), ref.uri, "s3_document")
        if not ref.key.endswith(DOCUMENT_SUFFIX):
            raise PlanRejectedError(
                object_identity,
                RequestRejectedError(
                    "invalid_request",
                    f"objects under {self._jobs_prefix!r} are job documents and must end in "
                    f"{DOCUMENT_SUFFIX!r}; media files go under a routed prefix",
                ),
            )
        raw = self._objects.read(ref, max_bytes=MAX_DOCUMENT_BYTES)
        if raw is None:
            raise PlanRejectedError(
                object_identity,
                RequestRejectedError("input_file_missing", f"the job document {ref.uri} no longer exists"),
            )
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise PlanRejectedError(
                object_identity,
                RequestRejectedError(
                    "input_file_too_large", f"a job document may hold at most {MAX_DOCUMENT_BYTES} bytes"
                ),
            )
        try:
            data = json.loads(raw)
        except ValueError as error:
            rejected = RequestRejectedError("malformed_json", f"the job document is not JSON: {error}")
            raise PlanRejectedError(object_identity, rejected) from error

        def identity(job_id: str | None) -> JobIdentity:
            return JobIdentity(job_id or object_identity.job_id, ref.uri, "s3_document")

        request = _validated(data, identity)
        return JobPlan(identity=identity(request.job_id), request=request, document=ref)

    def _plan_drop(self, created: ObjectCreated) -> JobPlan:
        ref = created.object
        identity = JobIdentity(object_job_id(created), ref.uri, "s3_media")
        matched = self._routes.match(ref.key)
        if matched is None:
            raise PlanRejectedError(
                identity,
                RequestRejectedError(
                    "unknown_route",
                    f"no route for key {ref.key!r}: known prefixes are {sorted(self._routes.prefixes)} "
                    f"(job documents go under {self._jobs_prefix!r})",
                ),
            )
        prefix, route = matched
        request = JobRequest.model_construct(
            model=route.model,
            input=route.input,
            job_id=None,
            metadata=dict(route.metadata),
            files={},
            priority=route.priority,
            start_timeout=route.start_timeout,
            output_prefix=route.output_prefix,
            **{name: getattr(route, name) for name in FAL_OPTION_FIELDS},
        )
        return JobPlan(identity=identity, request=request, route=route, route_prefix=prefix, dropped=ref)


def _validated(data: Any, identity: Callable[[str | None], JobIdentity]) -> JobRequest:
    """Validate ``data``; a rejection is filed under the caller's job id when that one is valid."""
    if not isinstance(data, dict):
        rejected = RequestRejectedError(
            "invalid_request", f"a job request is a JSON object, not a JSON {type(data).__name__}"
        )
        raise PlanRejectedError(identity(None), rejected)
    try:
        return validate_request(data)
    except RequestRejectedError as rejected:
        model = data.get("model") if isinstance(data.get("model"), str) else None
        raise PlanRejectedError(identity(job_id_hint(data)), rejected, model) from rejected
