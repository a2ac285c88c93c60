"""Input files: checked before a job is accepted, turned into URLs fal can read just before it is sent:
presigned SigV4 S3 GET URLs by default, or a fal CDN upload for routes that say
``"file_via": "fal_cdn"``. Presigned URLs are bearer credentials: they exist only in the request to
fal, never in the job record or the logs.
Why: docs/adr/0006-input-files-reach-fal-as-presigned-urls-or-cdn-uploads.md.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from falflow.aws.s3 import S3ObjectRef
from falflow.fal.ports import FalStorage
from falflow.submit.objects import InputObjects, ObjectInfo
from falflow.submit.plan import JobPlan
from falflow.submit.request import RequestRejectedError
from falflow.submit.routes import FileVia, Route, render

_DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class CheckedFile:
    ref: S3ObjectRef
    info: ObjectInfo


@dataclass(frozen=True)
class CheckedInputs:
    """A plan whose input files exist and fit, and the input as the job record shows it."""

    plan: JobPlan
    record_input: dict[str, Any]
    files: dict[str, CheckedFile] = field(default_factory=dict)
    dropped: CheckedFile | None = None
    # Placeholder values already known when checking ({file_text}, {file_name}, {key}).
    values: Mapping[str, str] = field(default_factory=dict)


class InputFiles:
    def __init__(
        self,
        objects: InputObjects,
        storage: FalStorage,
        *,
        input_bucket: str,
        presign_expiry_seconds: int,
    ) -> None:
        self._objects = objects
        self._storage = storage
        self._input_bucket = input_bucket
        self._expiry = presign_expiry_seconds

    def check(self, plan: JobPlan) -> CheckedInputs:
        """Look at every file the plan names; raise `RequestRejectedError` for one that is missing,
        too large, outside the input bucket, or (for ``{file_text}``) not UTF-8 text."""
        if plan.route is not None and plan.dropped is not None:
            return self._check_drop(plan, plan.route, plan.dropped)
        files = {name: self._check_file(name, ref) for name, ref in plan.request.file_refs().items()}
        record_input = dict(plan.request.input)  # the files stay apart, in the record's `files`
        return CheckedInputs(plan=plan, record_input=record_input, files=files)

    def resolve(self, checked: CheckedInputs) -> dict[str, Any]:
        """The input as fal gets it: every file replaced by a URL fal can read."""
        plan = checked.plan
        if plan.route is not None and checked.dropped is not None:
            url = self._url(checked.dropped, plan.route.file_via)
            resolved: dict[str, Any] = render(plan.route.input, {**checked.values, "file_url": url})
            return resolved
        urls = {
            name: self._url(checked_file, "presigned_url") for name, checked_file in checked.files.items()
        }
        return {**plan.request.input, **urls}

    def _check_drop(self, plan: JobPlan, route: Route, ref: S3ObjectRef) -> CheckedInputs:
        info = self._objects.head(ref)
        if info is None:
            raise _missing(ref)
        if route.max_bytes is not None and info.size > route.max_bytes:
            raise _too_large(ref, info.size, route.max_bytes, "the route's limit")
        values = {"file_name": ref.file_name, "key": ref.key}
        if "file_text" in route.placeholders:
            values["file_text"] = self._text(ref, route.max_text_bytes)
        record_input = render(route.input, {**values, "file_url": ref.uri})
        return CheckedInputs(
            plan=plan, record_input=record_input, dropped=CheckedFile(ref, info), values=values
        )

    def _check_file(self, name: str, ref: S3ObjectRef) -> CheckedFile:
        if ref.bucket != self._input_bucket:
            raise RequestRejectedError(
                "input_file_not_allowed",
                f"files.{name}: {ref.uri} is outside the input bucket {self._input_bucket!r}, "
                "the only bucket falflow reads inputs from",
            )
        info = self._objects.head(ref)
        if info is None:
            raise _missing(ref, f"files.{name}: ")
        return CheckedFile(ref, info)

    def _text(self, ref: S3ObjectRef, max_bytes: int) -> str:
        raw = self._objects.read(ref, max_bytes=max_bytes)
        if raw is None:
            raise _missing(ref)
        if len(raw) > max_bytes:
            raise _too_large(ref, None, max_bytes, "the limit of {file_text}")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestRejectedError(
                "input_file_not_text", f"{ref.uri} is not UTF-8 text ({error.reason} at byte {error.start})"
            ) from error

    def _url(self, checked: CheckedFile, via: FileVia) -> str:
        ref = checked.ref
        if via == "presigned_url":
            return self._objects.presign_get(ref, expires_in=self._expiry)
        stream = self._objects.open(ref)
        if stream is None:
            raise _missing(ref)
        content_type = stream.content_type or mimetypes.guess_type(ref.file_name)[0] or _DEFAULT_CONTENT_TYPE
        with stream.body:
            return self._storage.upload(
                stream.body, content_type=content_type, file_name=ref.file_name, size=stream.size
            )


def _missing(ref: S3ObjectRef, where: str = "") -> RequestRejectedError:
    return RequestRejectedError("input_file_missing", f"{where}{ref.uri} does not exist")


def _too_large(ref: S3ObjectRef, size: int | None, max_bytes: int, what: str) -> RequestRejectedError:
    actual = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return RequestRejectedError(
        "input_file_too_large",
        f"{ref.uri} is {actual}; {what} is {max_bytes} bytes",
        {"size": size, "max_bytes": max_bytes},
    )
