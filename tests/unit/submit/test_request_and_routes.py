"""The request schema, the route table, job ids, the webhook URL and the settings contract."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_settings import SettingsError

from falflow.aws.s3 import S3ObjectRef
from falflow.fal import (
    FalAuthError,
    FalError,
    FalNotFoundError,
    FalRateLimitedError,
    FalServerError,
    FalTransportError,
    FalValidationError,
)
from falflow.jobs.requests import same_fal_input
from falflow.submit.request import JobRequest, RequestRejectedError, parse_request
from falflow.submit.routes import RouteTable, render
from falflow.submit.service import FalFailure, classify_submit_error
from falflow.submit.settings import SubmitSettings
from falflow.submit.sources import ObjectCreated, message_job_id, object_job_id
from falflow_tools.template import function_specs, load_template, parameter_defaults

# ------------------------------------------------------------------------------- request


def test_a_full_request_validates() -> None:
    request = parse_request(
        json.dumps(
            {
                "model": "workflows/falflow/text-to-image",
                "input": {"prompt": "x"},
                "job_id": "order-1:hero.v2",
                "metadata": {"a": [1, 2]},
                "files": {"image_url": "s3://b/k/x.png?versionId=abc"},
                "priority": "low",
                "start_timeout": 30.5,
                "output_prefix": "orders/42/",
            }
        )
    )
    assert request.output_prefix == "orders/42"
    assert request.file_refs() == {"image_url": S3ObjectRef("b", "k/x.png", "abc")}


@pytest.mark.parametrize("job_id", ["", "-starts-with-dash", "has space", "a/b", "x" * 129, "ünï"], ids=repr)
def test_job_ids_are_safe_keys(job_id: str) -> None:
    with pytest.raises(RequestRejectedError, match="job_id"):
        parse_request(json.dumps({"model": "a/b", "input": {}, "job_id": job_id}))


@pytest.mark.parametrize(
    "uri", ["s3://bucket", "s3://bucket/", "s3://bucket/dir/", "https://b/k", "s3:///k", "s3://b/k?acl=1"]
)
def test_file_uris_name_one_s3_object(uri: str) -> None:
    with pytest.raises(RequestRejectedError, match="files"):
        parse_request(json.dumps({"model": "a/b", "input": {}, "files": {"image_url": uri}}))


def test_strict_types_refuse_what_lax_parsing_would_coerce() -> None:
    for bad in ({"start_timeout": "60"}, {"priority": 1}, {"metadata": []}, {"input": None}):
        with pytest.raises(RequestRejectedError):
            parse_request(json.dumps({"model": "a/b", "input": {}, **bad}))
    # an integer is a valid number of seconds
    assert JobRequest.model_validate({"model": "a/b", "input": {}, "start_timeout": 60}).start_timeout == 60


def test_validation_detail_names_every_problem_without_values() -> None:
    with pytest.raises(RequestRejectedError) as raised:
        parse_request(json.dumps({"model": 5, "input": "secret", "colour": "red"}))
    error = raised.value.error
    assert error.type == "invalid_request"
    assert {problem["loc"] for problem in error.detail} == {"model", "input", "colour"}
    assert "secret" not in json.dumps(error.detail) + error.message


# -------------------------------------------------------------------------------- routes

ROUTES = RouteTable.model_validate(
    {
        "img/": {"model": "a/b", "input": {"url": "{file_url}"}},
        "img/big/": {"model": "a/c", "input": {"url": "{file_url}"}},
    }
)


def test_the_longest_prefix_wins() -> None:
    assert ROUTES.match("img/big/x.png") is not None
    assert ROUTES.match("img/big/x.png")[0] == "img/big/"  # type: ignore[index]
    assert ROUTES.match("img/x.png")[0] == "img/"  # type: ignore[index]
    assert ROUTES.match("imgx.png") is None


def test_placeholders_are_replaced_everywhere_and_other_braces_kept() -> None:
    template = {"a": "{file_url}", "b": ["see {file_name} in {key}", {"c": "{style} {file_text}"}], "n": 3}
    values = {"file_url": "U", "file_name": "f.png", "key": "k/f.png", "file_text": "T"}
    assert render(template, values) == {"a": "U", "b": ["see f.png in k/f.png", {"c": "{style} T"}], "n": 3}


@pytest.mark.parametrize(
    "routes",
    [
        {"img/": {"model": "a/b", "input": {"prompt": "no file"}}},
        {"img/": {"model": "a/b", "input": {"url": "{file_url}"}, "colour": "red"}},
        {"img/": {"model": "not an id", "input": {"url": "{file_url}"}}},
        {"img/": {"model": "a/b", "input": {"url": "{file_url}"}, "file_via": "ftp"}},
        {"": {"model": "a/b", "input": {"url": "{file_url}"}}},
    ],
    ids=["file unused", "unknown field", "bad model", "bad file_via", "empty prefix"],
)
def test_a_bad_route_table_fails(routes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RouteTable.model_validate(routes)


# ---------------------------------------------------------------------------------- ids


def test_object_job_ids_follow_the_version_then_the_etag() -> None:
    ref = S3ObjectRef("b", "k.png", "v1")
    assert object_job_id(ObjectCreated(ref, etag="e1")) == object_job_id(ObjectCreated(ref, etag="e2"))
    assert object_job_id(ObjectCreated(ref)) != object_job_id(ObjectCreated(S3ObjectRef("b", "k.png", "v2")))
    unversioned = S3ObjectRef("b", "k.png")
    assert object_job_id(ObjectCreated(unversioned, etag='"e1"')) == object_job_id(
        ObjectCreated(S3ObjectRef("b", "k.png", "null"), etag="e1")
    )
    assert object_job_id(ObjectCreated(unversioned, etag="e1")) != object_job_id(
        ObjectCreated(unversioned, etag="e2")
    )


@given(st.text(min_size=1), st.text(min_size=1))
def test_object_job_ids_never_confuse_bucket_and_key(a: str, b: str) -> None:
    left = object_job_id(ObjectCreated(S3ObjectRef(a, b + "x"), etag="e"))
    right = object_job_id(ObjectCreated(S3ObjectRef(a + b, "x"), etag="e"))
    assert left != right


def test_message_job_ids_ignore_formatting_but_not_content() -> None:
    a = {"model": "a/b", "input": {"x": 1, "y": [1, 2]}}
    assert message_job_id("", a) == message_job_id("", json.loads(json.dumps(a, indent=4)))
    assert message_job_id("", a) != message_job_id("", {**a, "input": {"x": 2, "y": [1, 2]}})
    assert message_job_id("{bad") == message_job_id("{bad") != message_job_id("{bad ")


# ------------------------------------------------------------------------------- webhook


# ------------------------------------------------------------------------ fal's failures


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (FalValidationError("422", status=422), FalFailure.REFUSED),
        (FalNotFoundError("404", status=404), FalFailure.REFUSED),
        (FalError("400", status=400), FalFailure.REFUSED),
        (FalRateLimitedError("429", status=429, retryable=True), FalFailure.NOT_ACCEPTED),
        (FalAuthError("401", status=401), FalFailure.NOT_ACCEPTED),
        (
            FalServerError("503 ingress", status=503, retryable=True, not_received=True),
            FalFailure.NOT_ACCEPTED,
        ),
        (
            FalServerError("502 ingress", status=502, retryable=True, not_received=True),
            FalFailure.NOT_ACCEPTED,
        ),
        # A proxy's 5xx without fal's ingress evidence may come after fal queued the request.
        (FalServerError("504 proxy", status=504, retryable=True), FalFailure.AMBIGUOUS),
        (FalServerError("503", status=503, retryable=True), FalFailure.AMBIGUOUS),
        (FalServerError("503", status=503, retryable=True, request_id="r"), FalFailure.AMBIGUOUS),
        (FalServerError("500", status=500, retryable=True), FalFailure.AMBIGUOUS),
        (FalError("409", status=409, retryable=True), FalFailure.AMBIGUOUS),
        (FalTransportError("connect", ambiguous=False), FalFailure.NOT_ACCEPTED),
        (FalTransportError("read timeout", ambiguous=True), FalFailure.AMBIGUOUS),
    ],
    ids=lambda v: v.message if isinstance(v, FalError) else str(v),
)
def test_fal_failures_are_classified_by_whether_fal_may_have_the_job(
    error: FalError, failure: FalFailure
) -> None:
    assert classify_submit_error(error) is failure


# ------------------------------------------------------------------------------ settings

SETTINGS_ENV = {
    "JOBS_TABLE": "jobs",
    "INPUT_BUCKET": "in",
    "WEBHOOK_URL": "https://x.execute-api.us-east-1.amazonaws.com/webhooks/fal",
    "ROUTES": '{"img/": {"model": "a/b", "input": {"url": "{file_url}"}}}',
    "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/intake-dlq",
    "WEBHOOK_TOKEN_SECRET_ID": "arn:aws:secretsmanager:us-east-1:123456789012:secret:token-AbCdEf",
}


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        **SETTINGS_ENV,
        "SUBMIT_AMBIGUOUS_GRACE_SECONDS": "42",
        "SUBMIT_LEASE_SECONDS": "7.5",
    }.items():
        monkeypatch.setenv(name, value)
    settings = SubmitSettings()
    assert settings.routes.match("img/a.png") is not None
    assert settings.ambiguous_grace.total_seconds() == 42
    assert settings.worker_lease.total_seconds() == 7.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_URL", "/webhooks/fal"),
        ("WEBHOOK_URL", "https://x/webhooks/fal?job_id=1"),
        ("WEBHOOK_URL", "https://x/webhooks/fal?token=1"),
        ("WEBHOOK_TOKEN_SECRET_ID", ""),
        ("ROUTES", "{not json"),
        ("ROUTES", '{"jobs/x/": {"model": "a/b", "input": {"url": "{file_url}"}}}'),
        ("PRESIGN_EXPIRY_SECONDS", "999999999"),
    ],
    ids=[
        "relative webhook",
        "webhook with job_id",
        "webhook with token",
        "no token secret",
        "routes not JSON",
        "route under jobs/",
        "expiry > 7 days",
    ],
)
def test_bad_settings_fail_the_cold_start(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    for key, setting in {**SETTINGS_ENV, name: value}.items():
        monkeypatch.setenv(key, setting)
    with pytest.raises((ValidationError, SettingsError)):
        SubmitSettings()


def test_settings_read_exactly_the_variables_the_template_sets() -> None:
    environment = set(function_specs()["SubmitFunction"].environment)
    fields = {name.upper(): info for name, info in SubmitSettings.model_fields.items()}
    required = {name for name, info in fields.items() if info.is_required()}
    assert required <= environment, f"the template does not set {required - environment}"
    # Everything the template sets for submit is read by someone: these settings, the fal client,
    # the secrets, Powertools, the dead-letter policy or falflow.observability (TRACE_SUBSEGMENTS).
    others = {name for name in environment if name.startswith(("POWERTOOLS_", "FAL_"))}
    others |= {"DLQ_URL", "MAX_RECEIVES", "TRACE_SUBSEGMENTS"}
    assert environment - others <= set(fields), f"unread: {environment - others - set(fields)}"
    assert {"USAGE_TABLE", "OUTPUT_BUCKET", "SUBMIT_AMBIGUOUS_GRACE_SECONDS"} <= environment


def test_the_templates_defaults_make_valid_settings() -> None:
    template = load_template()
    parameters = parameter_defaults(template)
    settings = SubmitSettings(
        jobs_table="jobs",
        dlq_url="https://sqs.us-east-1.amazonaws.com/123456789012/intake-dlq",
        input_bucket="in",
        webhook_url="https://abc.execute-api.us-east-1.amazonaws.com/webhooks/fal",
        routes=json.loads(parameters["Routes"]),
        jobs_prefix=parameters["JobsPrefix"],
        presign_expiry_seconds=parameters["PresignExpirySeconds"],
        submit_ambiguous_grace_seconds=parameters["SubmitAmbiguousGraceSeconds"],
        webhook_token_secret_id="arn:aws:secretsmanager:us-east-1:123456789012:secret:token-AbCdEf",
    )
    assert settings.routes.match("upscale/cat.png") is not None
    assert settings.routes.match("animate/wave.txt") is not None
    # The first redelivery after an ambiguous submit (one visibility timeout later) may resend it.
    visibility = template["Resources"]["IntakeQueue"]["Properties"]["VisibilityTimeout"]
    assert settings.submit_ambiguous_grace_seconds < visibility


def test_the_submit_function_may_only_read_and_conditionally_write_jobs() -> None:
    resources = load_template()["Resources"]
    # Its permissions are in its own role (tests/unit/test_iam.py says why).
    role = resources[resources["SubmitFunction"]["Properties"]["Role"]["Fn::GetAtt"][0]]
    statements = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    actions = {
        a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert not {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"} & actions  # no delete
    jobs = next(s for s in statements if s.get("Sid") == "JobRecords")
    assert sorted(jobs["Action"]) == ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    assert jobs["Resource"] == {"Fn::GetAtt": ["JobsTable", "Arn"]}  # no index: no scan of jobs
    catalogue = next(s for s in statements if s.get("Sid") == "ModelCatalogue")
    assert {"Fn::GetAtt": ["UsageTable", "Arn"]} in catalogue["Resource"]
    assert not [a for a in catalogue["Action"] if a.endswith(("PutItem", "UpdateItem", "DeleteItem"))]


def test_inputs_are_the_same_across_presigned_signatures_but_not_across_objects() -> None:
    def presigned(key: str, version: str, signature: str) -> str:
        return (
            f"https://in.s3.amazonaws.com/{key}?versionId={version}&X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Date=2026120{signature}T000000Z&X-Amz-Security-Token=t{signature}"
            f"&X-Amz-Signature={signature * 8}"
        )

    sent = {"image_url": presigned("a.png", "v1", "1"), "steps": [1, {"x": "y"}]}
    assert same_fal_input(sent, {"image_url": presigned("a.png", "v1", "2"), "steps": [1, {"x": "y"}]})
    assert not same_fal_input(sent, {"image_url": presigned("a.png", "v2", "2"), "steps": [1, {"x": "y"}]})
    assert not same_fal_input(sent, {"image_url": presigned("b.png", "v1", "1"), "steps": [1, {"x": "y"}]})
    assert not same_fal_input(sent, {"image_url": presigned("a.png", "v1", "1"), "steps": [2]})
    assert not same_fal_input(sent, None)  # fal kept no payload
    # Two uploads of one file to fal's CDN get two URLs: no evidence they are one input.
    assert not same_fal_input(
        {"image_url": "https://v3.fal.media/files/a"}, {"image_url": "https://v3.fal.media/files/b"}
    )
