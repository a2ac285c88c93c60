"""`falflow console` in a real headless browser (Debian's chromium, driven by Playwright): the
demo's jobs and their outputs appear on the page, the cost chart is drawn, filters work, and the
page holds no key."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from falflow.jobs import JobState
from falflow_tools.console.app import ConsoleServer
from falflow_tools.demo import DemoJob, start_jobs
from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.target import Target
from tests.e2e.conftest import wait_for_job

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="no chromium: ./scripts/setup installs Debian's package when run as root",
    ),
]


@pytest.fixture(scope="module")
def demo_jobs(stack: LocalStack, target: Target) -> list[DemoJob]:
    """The demo's five jobs (image, video, audio; drops, a document, messages), finished and priced."""
    jobs = start_jobs(target)
    for demo_job in jobs:
        demo_job.job = wait_for_job(target, demo_job.job_id, timeout_s=60)
        assert demo_job.job.state == JobState.COMPLETED, demo_job
    assert stack.run_schedule("CollectFunction").ok
    return jobs


@pytest.fixture(scope="module")
def console(target: Target) -> Iterator[str]:
    server = ConsoleServer(target)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only where chromium is

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, console: str, demo_jobs: list[DemoJob]) -> Iterator[Any]:
    opened = browser.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(console)
    opened.wait_for_selector("body[data-loaded=true]")
    yield opened
    opened.close()
    assert errors == []


def _job_of(demo_jobs: list[DemoJob], model: str) -> str:
    return next(j.job_id for j in demo_jobs if j.job is not None and j.job.model == model)


def test_the_demos_jobs_are_listed(page: Any, demo_jobs: list[DemoJob]) -> None:
    listed = page.eval_on_selector_all("#jobs tbody tr", "rows => rows.map(r => r.dataset.jobId)")

    assert {j.job_id for j in demo_jobs} <= set(listed)
    row = page.locator(f'tr[data-job-id="{demo_jobs[0].job_id}"]')
    assert row.locator("td").nth(1).inner_text() == "COMPLETED"
    assert row.locator("td").nth(0).inner_text() == demo_jobs[0].job_id  # the whole id


@pytest.mark.parametrize(
    ("model", "selector"),
    [
        ("fal-ai/flux/dev", "#detail-outputs img"),
        ("fal-ai/clarity-upscaler", "#detail-outputs img"),
        ("fal-ai/kling-video/v2/master/text-to-video", "#detail-outputs video"),
        ("fal-ai/stable-audio", "#detail-outputs audio"),
    ],
)
def test_a_jobs_outputs_play_inline(
    page: Any, stack: LocalStack, target: Target, demo_jobs: list[DemoJob], model: str, selector: str
) -> None:
    job_id = _job_of(demo_jobs, model)

    page.click(f'tr[data-job-id="{job_id}"]')
    page.wait_for_selector(f"#detail-id:text-is('{job_id}')")
    media = page.locator(selector).first
    media.wait_for()
    if selector.endswith("img"):
        page.wait_for_function(
            "el => el.complete && el.naturalWidth > 0", arg=media.element_handle(), timeout=15_000
        )
    elif selector.endswith("audio"):  # the player has read the file's metadata from its presigned link
        page.wait_for_function("el => el.readyState >= 1", arg=media.element_handle(), timeout=15_000)
    else:
        # The emulator's MP4 is a valid container with no decodable track, so no browser plays it;
        # the player is there and its link serves the stored file.
        served = page.request.get(media.get_attribute("src"))
        assert served.status == 200
        assert served.body() == _stored(stack, target, job_id)
    record = page.inner_text("#detail-record")
    assert f'"job_id": "{job_id}"' in record
    assert '"state": "COMPLETED"' in record
    assert "result.json" in page.inner_text("#detail-outputs")


def _stored(stack: LocalStack, target: Target, job_id: str) -> bytes:
    job = target.job_store().get(job_id)
    assert job is not None
    (key,) = job.outputs
    return stack.s3().get_object(Bucket=target.output("OutputBucketName"), Key=key)["Body"].read()


def test_the_cost_charts_are_drawn(page: Any, demo_jobs: list[DemoJob]) -> None:
    page.wait_for_selector("#cost-by-model rect.bar")
    by_model = page.eval_on_selector_all(
        "#cost-by-model rect.bar", "bars => bars.map(b => [b.dataset.label, Number(b.dataset.amount)])"
    )
    by_day = page.eval_on_selector_all("#cost-by-day rect.bar", "bars => bars.length")

    models = {label for label, amount in by_model if amount > 0}
    assert {j.job.model for j in demo_jobs if j.job is not None} <= models
    assert by_day >= 1
    heights = page.eval_on_selector_all(
        "#cost-by-model rect.bar", "bars => bars.map(b => b.getBBox().height)"
    )
    assert all(height > 0 for height in heights)


def test_filters_narrow_the_jobs(page: Any, demo_jobs: list[DemoJob]) -> None:
    page.select_option("#filter-state", "COMPLETED")
    page.select_option("#filter-model", "fal-ai/stable-audio")
    page.wait_for_selector('#jobs[data-query="state=COMPLETED&model=fal-ai%2Fstable-audio&since=7d"]')

    rows = page.eval_on_selector_all(
        "#jobs tbody tr", "rows => rows.map(r => [r.dataset.jobId, r.dataset.state, r.dataset.model])"
    )
    assert _job_of(demo_jobs, "fal-ai/stable-audio") in [job_id for job_id, _, _ in rows]
    assert {(state, model) for _, state, model in rows} == {("COMPLETED", "fal-ai/stable-audio")}

    page.select_option("#filter-state", "FAILED")
    page.wait_for_selector('#jobs[data-query="state=FAILED&model=fal-ai%2Fstable-audio&since=7d"]')
    assert page.eval_on_selector_all("#jobs tbody tr", "rows => rows.length") == 0


def test_dead_letters_are_shown(page: Any) -> None:
    page.wait_for_selector("#dlq-section")
    rows = page.eval_on_selector_all("#dlq tbody tr", "rows => rows.length")
    empty = page.is_visible("#dlq-empty")

    assert (rows == 0) == empty


def test_no_key_reaches_the_page(
    stack: LocalStack, target: Target, console: str, demo_jobs: list[DemoJob]
) -> None:
    manager = stack.secretsmanager()
    secrets = [  # every secret of the stack: the fal keys, the webhook token secret, …
        manager.get_secret_value(SecretId=entry["ARN"])["SecretString"]
        for entry in manager.list_secrets()["SecretList"]
    ]
    assert len(secrets) >= 2
    paths = ["/", "/console.js", "/api/about", "/api/jobs?since=30d", "/api/costs", "/api/dlq"]
    paths += [f"/api/jobs/{j.job_id}" for j in demo_jobs]

    bodies = [httpx.get(console.rstrip("/") + path).text for path in paths]

    for secret in secrets:
        for value in {secret, *_key_parts(secret)}:
            assert all(value not in body for body in bodies), "a secret reached the console"


def _key_parts(secret: str) -> list[str]:
    """A key secret may be a JSON document or `id:secret`: each part must stay out too."""
    try:
        document = json.loads(secret)
    except ValueError:
        return [part for part in secret.split(":") if len(part) > 8]
    values = document.values() if isinstance(document, dict) else []
    return [p for v in values if isinstance(v, str) for p in [v, *v.split(":")] if len(p) > 8]


def test_the_console_is_read_only_and_answers_only_for_loopback(console: str) -> None:
    written = httpx.post(console.rstrip("/") + "/api/jobs")
    rebound = httpx.get(console, headers={"host": "attacker.example:80"})
    page = httpx.get(console)

    assert written.status_code == 405
    assert rebound.status_code == 421
    assert "default-src 'self'" in page.headers["content-security-policy"]
