"""Requests that can never succeed: a REJECTED record with a clear reason, fal never asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from falflow.jobs import JobState
from falflow.submit.service import SubmitOutcome
from falflow.submit.sources import JobSource, ObjectCreated, message_job_id, object_job_id
from tests.unit.submit.conftest import BUCKET, Harness, message

FLUX = {"model": "fal-ai/flux/dev", "input": {"prompt": "x"}}


@dataclass(frozen=True)
class Bad:
    source: Callable[[Harness], JobSource]
    error_type: str
    says: str  # a phrase the reason must contain


BAD_INPUTS: dict[str, Bad] = {
    "malformed JSON": Bad(lambda h: message('{"model": "fal-ai/flux/dev", '), "malformed_json", "not JSON"),
    "not an object": Bad(lambda h: message("[1, 2]"), "invalid_request", "not a JSON list"),
    "unknown field": Bad(lambda h: message({**FLUX, "webhook": "https://x"}), "invalid_request", "webhook"),
    "missing model": Bad(lambda h: message({"input": {}}), "invalid_request", "model"),
    "input not an object": Bad(lambda h: message({**FLUX, "input": "a cat"}), "invalid_request", "input"),
    "number as a string": Bad(
        lambda h: message({**FLUX, "start_timeout": "60"}), "invalid_request", "start_timeout"
    ),
    "bad priority": Bad(lambda h: message({**FLUX, "priority": "urgent"}), "invalid_request", "priority"),
    "start timeout too short": Bad(
        lambda h: message({**FLUX, "start_timeout": 1}), "invalid_request", "start_timeout"
    ),
    "bad model id": Bad(lambda h: message({**FLUX, "model": "flux dev"}), "invalid_request", "endpoint id"),
    "files not s3": Bad(
        lambda h: message({**FLUX, "files": {"image_url": "https://x/y.png"}}), "invalid_request", "s3://"
    ),
    "file also in input": Bad(
        lambda h: message({**FLUX, "files": {"prompt": f"s3://{BUCKET}/a.txt"}}), "invalid_request", "prompt"
    ),
    "escaping output prefix": Bad(
        lambda h: message({**FLUX, "output_prefix": "a/../b"}), "invalid_request", ".."
    ),
    "unknown route": Bad(lambda h: h.drop("misc/cat.png"), "unknown_route", "misc/cat.png"),
    "file missing": Bad(
        lambda h: message({**FLUX, "files": {"image_url": f"s3://{BUCKET}/nowhere.png"}}),
        "input_file_missing",
        "nowhere.png",
    ),
    "file in another bucket": Bad(
        lambda h: message({**FLUX, "files": {"image_url": "s3://someone-else/a.png"}}),
        "input_file_not_allowed",
        "someone-else",
    ),
    "object too large for its route": Bad(
        lambda h: h.drop("upscale/huge.png", b"x" * 1001), "input_file_too_large", "1001 bytes"
    ),
    "text file too large": Bad(
        lambda h: h.drop("animate/long.txt", b"x" * 101), "input_file_too_large", "100"
    ),
    "text file not UTF-8": Bad(
        lambda h: h.drop("animate/bin.txt", b"\xff\xfe"), "input_file_not_text", "UTF-8"
    ),
    "document not JSON": Bad(lambda h: h.document("jobs/a.json", b"{nope"), "malformed_json", "not JSON"),
    "document not .json": Bad(lambda h: h.drop("jobs/a.png"), "invalid_request", ".json"),
    "document with unknown field": Bad(
        lambda h: h.document("jobs/b.json", {**FLUX, "colour": "red"}), "invalid_request", "colour"
    ),
    "metadata too large": Bad(
        lambda h: message({**FLUX, "metadata": {"blob": "x" * 20000}}), "metadata_too_large", "16384"
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_a_bad_request_is_rejected_with_a_clear_reason(harness: Harness, case: Bad) -> None:
    source = case.source(harness)

    result = harness.service.submit_job(source)

    assert result.outcome is SubmitOutcome.REJECTED
    assert result.created
    job = harness.job(result.job_id)
    assert job.state is JobState.REJECTED
    assert job.error is not None
    assert job.error.type == case.error_type
    assert case.says in job.error.message
    assert job.expires_at is not None
    assert harness.fal.attempts == 0
    # A redelivery finds the record: one record, still nothing sent.
    assert harness.service.submit_job(source).outcome is SubmitOutcome.DUPLICATE
    assert harness.fal.attempts == 0


FOREIGN = "someone-elses-bucket"


@pytest.mark.parametrize(
    ("key", "body", "kind"),
    [
        ("upscale/cat.png", b"\x89PNG foreign", "s3_media"),
        ("jobs/run.json", b'{"model": "fal-ai/flux/dev", "input": {"prompt": "theirs"}}', "s3_document"),
    ],
    ids=["media drop", "job document"],
)
def test_a_notification_for_another_bucket_is_rejected_and_nothing_is_read_from_it(
    harness: Harness, key: str, body: bytes, kind: str
) -> None:
    # A forged (or misrouted) notification naming an object that exists, in a bucket not ours.
    ref = harness.objects.put(FOREIGN, key, body, version_id="v1")
    created = ObjectCreated(object=ref, etag="e", size=len(body))

    result = harness.service.submit_job(created)

    assert result.outcome is SubmitOutcome.REJECTED
    job = harness.job(result.job_id)
    assert (job.state, job.source, job.source_kind) == (JobState.REJECTED, ref.uri, kind)
    assert job.error is not None
    assert job.error.type == "foreign_bucket"
    assert FOREIGN in job.error.message
    assert BUCKET in job.error.message
    assert harness.objects.touched == []  # not read, not presigned for fal
    assert harness.fal.attempts == 0


def test_a_malformed_message_is_filed_under_the_hash_of_its_body(harness: Harness) -> None:
    body = '{"model": oops}'
    result = harness.service.submit_job(message(body))
    assert result.job_id == message_job_id(body)
    assert harness.job(result.job_id).source == "sqs:m-1"


def test_a_rejection_is_filed_under_the_callers_job_id_when_that_is_valid(harness: Harness) -> None:
    result = harness.service.submit_job(message({"job_id": "order-9", "model": 42, "input": {}}))
    assert result.job_id == "order-9"
    job = harness.job("order-9")
    assert job.error is not None
    assert "model" in job.error.message
    assert job.error.detail == [
        {"loc": "model", "msg": "Input should be a valid string", "type": "string_type"}
    ]


def test_the_validation_detail_never_echoes_the_input(harness: Harness) -> None:
    result = harness.service.submit_job(message({**FLUX, "start_timeout": "secret-looking-value"}))
    assert "secret-looking-value" not in harness.job(result.job_id).model_dump_json()


@pytest.mark.parametrize(
    ("status", "error_type"), [(None, "unknown_model"), ("deprecated", "deprecated_model")]
)
def test_a_loaded_catalogue_rejects_unknown_and_deprecated_models(
    harness: Harness, status: Any, error_type: str
) -> None:
    harness.catalogue.loaded = True
    harness.catalogue.models = {"fal-ai/flux/dev": "active"} | ({"fal-ai/old": status} if status else {})

    rejected = harness.service.submit_job(message({"model": "fal-ai/old", "input": {}}))
    accepted = harness.service.submit_job(message(FLUX))

    assert rejected.outcome is SubmitOutcome.REJECTED
    assert harness.job(rejected.job_id).error.type == error_type  # type: ignore[union-attr]
    assert accepted.outcome is SubmitOutcome.SUBMITTED


def test_a_private_app_of_an_owner_the_catalogue_does_not_list_goes_to_fal(harness: Harness) -> None:
    harness.catalogue.loaded = True
    harness.catalogue.models = {"fal-ai/flux/dev": "active"}
    private = harness.service.submit_job(message({"model": "my-team/upscaler", "input": {}}))
    assert private.outcome is SubmitOutcome.SUBMITTED


def test_without_a_loaded_catalogue_fal_judges_the_model(harness: Harness) -> None:
    harness.catalogue.loaded = False
    assert (
        harness.service.submit_job(message({"model": "fal-ai/old", "input": {}})).outcome
        is SubmitOutcome.SUBMITTED
    )


def test_a_drop_rejected_for_its_route_is_filed_under_its_object(harness: Harness) -> None:
    drop = harness.drop("misc/x.png")
    assert harness.service.submit_job(drop).job_id == object_job_id(drop)
