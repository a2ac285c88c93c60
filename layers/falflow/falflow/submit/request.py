"""A job request: what a job message or a job document asks for, validated with pydantic.

One schema for both forms. Unknown top-level fields are errors, and so are values of the wrong
type: validation is strict (a JSON string "10" is not a number). ``files`` maps an input field to
an ``s3://bucket/key[?versionId=…]`` URI that falflow turns into a URL fal can read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from falflow.aws.s3 import S3ObjectRef
from falflow.deferred import DeferredModel
from falflow.fal.endpoints import EndpointId
from falflow.jobs import JobError
from falflow.jobs.batch import BATCH_JOB_PREFIX, JobBatch

Priority = Literal["normal", "low"]

# The caller's idempotency key becomes the job id: DynamoDB key, URL parameter, S3 key segment.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_MAX_OUTPUT_PREFIX = 256
# fal's clients refuse start timeouts of 1 s or less; a day is far beyond any queue wait.
_MAX_START_TIMEOUT_S = 86400.0


def _endpoint_id(value: str) -> str:
    EndpointId.parse(value)  # raises ValueError with fal's rules for the id
    return value


def _output_prefix(value: str) -> str:
    segments = value.split("/")
    if (
        value.startswith("/")
        or any(s in ("", ".", "..") for s in segments[:-1])
        or segments[-1] in (".", "..")
    ):
        raise ValueError("must be a relative path without empty, '.' or '..' segments")
    return value.rstrip("/")


def _s3_uri(value: str) -> str:
    S3ObjectRef.parse(value)
    return value


EndpointIdStr = Annotated[str, AfterValidator(_endpoint_id)]
JobIdStr = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
InputFieldName = Annotated[str, StringConstraints(pattern=_FIELD_NAME_PATTERN)]
S3Uri = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_s3_uri)]
StartTimeout = Annotated[float, Field(gt=1.0, le=_MAX_START_TIMEOUT_S)]
# Seconds fal keeps a job's output files (X-Fal-Object-Lifecycle-Preference); at least 1 s (SPEC).
OutputExpiry = Annotated[int, Field(ge=1)]
OutputPrefix = Annotated[
    str, StringConstraints(min_length=1, max_length=_MAX_OUTPUT_PREFIX), AfterValidator(_output_prefix)
]


@dataclass(frozen=True)
class FalDefaults:
    """The stack's answers (settings) where a request or route leaves a fal option unset."""

    store_io: bool = True
    private_outputs: bool = False
    output_expiry_seconds: int | None = None
    delete_payloads: bool = False
    allow_fallbacks: bool = False


FAL_OPTION_FIELDS = (
    "store_io",
    "private_outputs",
    "output_expiry_seconds",
    "delete_payloads",
    "allow_fallbacks",
)


def fal_options(request: JobRequest, defaults: FalDefaults) -> dict[str, Any]:
    """The job record's fal options: the request's (or its route's) where set, else the stack's."""
    chosen = {name: getattr(request, name) for name in FAL_OPTION_FIELDS}
    return {name: getattr(defaults, name) if value is None else value for name, value in chosen.items()}


class JobRequest(DeferredModel):
    """A job message or job document. ``input`` is the model's own input, passed through."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: EndpointIdStr
    input: dict[str, Any]
    job_id: JobIdStr | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    files: dict[InputFieldName, S3Uri] = Field(default_factory=dict)
    priority: Priority = "normal"
    start_timeout: StartTimeout | None = None
    output_prefix: OutputPrefix | None = None
    # What fal may keep and do (None: the stack default; README "What fal keeps").
    store_io: bool | None = None
    private_outputs: bool | None = None
    output_expiry_seconds: OutputExpiry | None = None
    delete_payloads: bool | None = None
    allow_fallbacks: bool | None = None
    # The batch line this job is (falflow.submit.batches); its job id is the one the line derives.
    batch: JobBatch | None = None

    @model_validator(mode="after")
    def _batch_jobs_carry_their_line(self) -> Self:
        if self.batch is not None and self.job_id != self.batch.job_id:
            raise ValueError("a batch line's job_id is the one its batch and custom_id derive")
        if self.batch is None and self.job_id is not None and self.job_id.startswith(BATCH_JOB_PREFIX):
            raise ValueError(f"job ids starting {BATCH_JOB_PREFIX!r} are reserved for batch lines")
        return self

    @model_validator(mode="after")
    def _files_do_not_shadow_input(self) -> Self:
        clash = sorted(set(self.files) & set(self.input))
        if clash:
            raise ValueError(f"input fields {clash} are also in files: name each input field once")
        return self

    def file_refs(self) -> dict[str, S3ObjectRef]:
        return {name: S3ObjectRef.parse(uri) for name, uri in self.files.items()}

    def same_work_as(self, other: JobRequest) -> bool:
        """Whether two requests ask fal for the same thing (metadata aside)."""
        return (self.model, self.input, self.files) == (other.model, other.input, other.files)


class RequestRejectedError(Exception):
    """The request can never succeed as sent: the job is recorded REJECTED with this error."""

    def __init__(self, error_type: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.error = JobError(type=error_type, message=message, detail=detail)


def parse_request(raw: str | bytes) -> JobRequest:
    """Validate a JSON job message or document; raise `RequestRejectedError` saying what is wrong."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise RequestRejectedError("malformed_json", f"the body is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise RequestRejectedError(
            "invalid_request", f"a job request is a JSON object, not a JSON {type(data).__name__}"
        )
    return validate_request(data)


def validate_request(data: dict[str, Any]) -> JobRequest:
    try:
        return JobRequest.model_validate(data)
    except ValidationError as error:
        problems = validation_problems(error)
        summary = "; ".join(f"{p['loc'] or '(root)'}: {p['msg']}" for p in problems)
        raise RequestRejectedError("invalid_request", f"invalid job request: {summary}", problems) from error


def validation_problems(error: ValidationError) -> list[dict[str, str]]:
    """pydantic's errors without the offending input values (they may be large or private)."""
    return [
        {"loc": ".".join(str(part) for part in item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]


def job_id_hint(data: Any) -> str | None:
    """The caller's job id from a request that failed validation, if that field itself is valid,
    so the REJECTED record sits where the caller will look for it."""
    value = data.get("job_id") if isinstance(data, dict) else None
    try:
        return JobRequest.model_validate({"model": "a/b", "input": {}, "job_id": value}).job_id
    except ValidationError:
        return None
