"""`events/` holds only invokable Lambda events, each invoked by a named test; payload samples and
the webhook test key live in `samples/`; re-signing never rewrites a committed file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from falflow_tools.template import REPO_ROOT, function_specs
from tests.fakes import webhook_events
from tests.fakes.webhook_events import EVENTS_DIR, SAMPLES_DIR, resign_samples

EVENTS = REPO_ROOT / "events"

# Every event, and the test that hands it to its function's handler as it is committed.
INVOKED_BY = {
    "collect/schedule.json": "tests/integration/collect/conftest.py",
    "reconcile/schedule.json": "tests/integration/completion/test_sample_events.py",
    "store/outputs-message.json": "tests/integration/completion/test_sample_events.py",
    "submit/sqs-bad-message.json": "tests/integration/submit/test_request_forms.py",
    "submit/sqs-batch-message.json": "tests/integration/submit/test_request_forms.py",
    "submit/sqs-job-message.json": "tests/integration/submit/test_request_forms.py",
    "submit/sqs-s3-job-document.json": "tests/integration/submit/test_request_forms.py",
    "submit/sqs-s3-put.json": "tests/integration/submit/test_request_forms.py",
    "submit/sqs-s3-test-event.json": "tests/integration/submit/test_request_forms.py",
    "webhook/error.json": "tests/integration/webhook/test_webhook_function.py",
    "webhook/ok.json": "tests/integration/webhook/test_webhook_function.py",
    "webhook/payload_error.json": "tests/integration/webhook/test_webhook_function.py",
}


def test_events_holds_only_events_each_invoked_by_a_test() -> None:
    present = sorted(str(path.relative_to(EVENTS)) for path in EVENTS.rglob("*") if path.is_file())
    assert present == sorted(INVOKED_BY)
    folders = {Path(spec.code_dir).name for spec in function_specs().values()}
    for name, test in INVOKED_BY.items():
        folder, file_name = name.split("/")
        assert folder in folders, f"{name}: no function reads events/{folder}/"
        event = json.loads((EVENTS / name).read_text())
        # Lambda's shapes: SQS records, an HTTP API (payload 2.0) request, a scheduled event.
        shape = {"submit": "Records", "store": "Records", "webhook": "requestContext"}.get(
            folder, "detail-type"
        )
        assert shape in event, f"{name} is not a {folder} event"
        assert file_name in (REPO_ROOT / test).read_text() or name in (REPO_ROOT / test).read_text()


def test_resigning_writes_copies_to_the_named_folder_only(tmp_path: Path) -> None:
    committed = {path.name: path.read_bytes() for path in EVENTS_DIR.glob("*.json")}

    written = resign_samples(tmp_path / "signed")

    assert sorted(path.name for path in written) == sorted(committed)
    assert {path.name: path.read_bytes() for path in EVENTS_DIR.glob("*.json")} == committed
    for path in written:
        headers = json.loads(path.read_text())["headers"]
        # Signed just now (fal accepts ±300 s), unlike the committed copy.
        assert abs(int(headers["x-fal-webhook-timestamp"]) - time.time()) < 300
        old = json.loads(committed[path.name])["headers"]
        assert headers["x-fal-webhook-signature"] != old["x-fal-webhook-signature"]


@pytest.mark.parametrize("folder", [EVENTS_DIR, SAMPLES_DIR])
def test_resigning_refuses_the_committed_folders(folder: Path) -> None:
    with pytest.raises(ValueError, match="committed samples"):
        resign_samples(folder)
    with pytest.raises(SystemExit):
        webhook_events.main([])  # no folder named: usage, nothing written
