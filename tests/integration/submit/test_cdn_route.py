"""A route that says ``"file_via": "fal_cdn"``: the dropped file is streamed to fal's CDN and fal
gets the CDN URL, not a presigned URL signed with the function's temporary credentials."""

from __future__ import annotations

import json

import httpx
import pytest

from falflow.jobs import JobState
from tests.integration.submit.conftest import SubmitHarness

ROUTES = {
    "cdn/": {
        "model": "fal-ai/clarity-upscaler",
        "input": {"image_url": "{file_url}", "prompt": "{file_name}"},
        "file_via": "fal_cdn",
    }
}


@pytest.fixture
def submit_env() -> dict[str, str]:
    return {"ROUTES": json.dumps(ROUTES)}


def test_a_cdn_route_uploads_the_file_and_submits_its_cdn_url(submit: SubmitHarness) -> None:
    record = submit.put("cdn/photo 1.png", b"\x89PNG bytes", "image/png")

    assert submit.deliver([record]).responses == [{"batchItemFailures": []}]

    (job,) = submit.jobs()
    assert job.state is JobState.SUBMITTED
    (sent,) = [r for r in submit.fal.control.requests() if r.group == "submit"]
    image_url = sent.body["image_url"]
    assert image_url.startswith(submit.fal.urls.base)
    assert "X-Amz-" not in image_url
    assert sent.body["prompt"] == "photo 1.png"
    assert httpx.get(image_url).content == b"\x89PNG bytes"
    assert job.input == {
        "image_url": f"s3://{submit.bucket}/cdn/photo 1.png?versionId={job.source.split('=')[-1]}",
        "prompt": "photo 1.png",
    }
