"""Regenerates the submit function's sample events with `sam local generate-event` (offline).

    .venv/bin/python samples/submit/generate.py

The submit function reads the intake queue, so every event in `events/submit/` is an SQS event
(what `sam local invoke SubmitFunction -e events/submit/<file>` takes) whose body is an S3
notification (`sam local generate-event s3 put`), a job message or a batch message. The payloads
themselves (a job message, a job document, an S3 notification, a batch message and its manifest)
are samples, not events: they live here, in
`samples/submit/`. Names match the local stack's resources (`falflow-inputbucket`,
`falflow-IntakeQueue`); the tests rewrite bucket and keys as they need.
"""

from __future__ import annotations

import hashlib
import json
import subprocess  # runs the pinned SAM CLI only  # nosec B404
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVENTS = HERE.parents[1] / "events" / "submit"
SAM = HERE.parents[1] / ".venv-sam" / "bin" / "sam"
BUCKET = "falflow-inputbucket"
QUEUE = "falflow-IntakeQueue"

JOB_MESSAGE = {
    "model": "fal-ai/flux/dev",
    "input": {"prompt": "a lighthouse on a cliff at dawn, oil painting", "num_images": 1},
    "job_id": "order-1234-hero",
    "metadata": {"order": 1234, "requested_by": "shop-service"},
    "priority": "normal",
    "start_timeout": 600,
    "output_prefix": "orders/1234",
}
JOB_DOCUMENT = {
    "model": "fal-ai/clarity-upscaler",
    "input": {"prompt": "masterpiece, best quality", "upscale_factor": 2},
    "files": {"image_url": f"s3://{BUCKET}/uploads/product-1234.png"},
    "metadata": {"order": 1234},
}
# A batch message naming a manifest (samples/submit/batch-manifest.jsonl, put there by the test) out
# of the batches prefix, so that the upload's own notification starts no second batch.
BATCH_MESSAGE = {
    "batch": f"s3://{BUCKET}/manifests/covers.jsonl",
    "name": "spring-covers",
    "defaults": {"priority": "low", "metadata": {"campaign": "spring"}},
}
S3_TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2026-09-01T12:00:00.000Z",
    "Bucket": BUCKET,
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}


def sam(*args: str) -> Any:
    output = subprocess.run(  # noqa: S603 - a fixed local binary with fixed arguments  # nosec B603
        [str(SAM), "local", "generate-event", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output)


def s3_put(key: str) -> dict[str, Any]:
    event: dict[str, Any] = sam("s3", "put", "--bucket", BUCKET, "--key", key)
    return event


def sqs_event(*bodies: str) -> dict[str, Any]:
    """An SQS event with one record per body (sam's --body takes the text unescaped: escape it)."""
    records = []
    for index, body in enumerate(bodies):
        escaped = json.dumps(body)[1:-1]
        record = sam("sqs", "receive-message", "--queue-name", QUEUE, "--body", escaped)["Records"][0]
        assert record["body"] == body, "sam changed the body"
        record["messageId"] = str(uuid.UUID(int=index + 1))
        # SQS's own checksum of the body.
        record["md5OfBody"] = hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
        records.append(record)
    return {"Records": records}


def write(name: str, event: Any) -> None:
    """An invokable event into events/submit/; a payload (not an SQS event) beside this script."""
    folder = EVENTS if name.startswith("sqs-") else HERE
    (folder / name).write_text(json.dumps(event, indent=2) + "\n")


def main() -> None:
    put = s3_put("upscale/holiday photo (1).png")
    write("s3-put.json", put)
    write("sqs-s3-put.json", sqs_event(json.dumps(put)))
    write("job-message.json", JOB_MESSAGE)
    write("sqs-job-message.json", sqs_event(json.dumps(JOB_MESSAGE)))
    write("job-document.json", JOB_DOCUMENT)
    write("sqs-s3-job-document.json", sqs_event(json.dumps(s3_put("jobs/order-1234-upscale.json"))))
    write("sqs-s3-test-event.json", sqs_event(json.dumps(S3_TEST_EVENT)))
    write("batch-message.json", BATCH_MESSAGE)
    write("sqs-batch-message.json", sqs_event(json.dumps(BATCH_MESSAGE)))
    bad = '{"model": "fal-ai/flux/dev", "input": {"prompt": "unterminated"'
    write("sqs-bad-message.json", sqs_event(bad))


if __name__ == "__main__":
    main()
