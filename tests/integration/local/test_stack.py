"""LocalStack wiring, without starting the functions: environments, real-fal mode, state file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from falflow_tools.local.resources import ProvisionedStack
from falflow_tools.local.schedules import ScheduleSpec, rate_seconds
from falflow_tools.local.stack import LocalStack, LocalStackConfig, lambda_environment
from falflow_tools.local.state import LocalState
from falflow_tools.local.timings import BACKOFF_SETTINGS, LEASE_SETTINGS
from falflow_tools.template import function_specs

# What the stack may change in a function's environment: local endpoints only …
LOCAL_ENDPOINT_VARIABLES = {"AWS_ENDPOINT_URL", "WEBHOOK_URL", "MEDIA_ALLOW_LOCAL"}
# … and the durations it scales with its short queues and schedules (falflow_tools.local.timings,
# the receipt window of falflow.completion.finalise).
SCALED_VARIABLES = {
    *(name for name, _ in (*LEASE_SETTINGS.values(), *BACKOFF_SETTINGS.values())),
    "EVENT_RECEIPT_WINDOW_SECONDS",
}
FAL_ENDPOINT_VARIABLES = {
    "FAL_QUEUE_URL",
    "FAL_RUN_URL",
    "FAL_QUEUE_BACKUP_URL",
    "FAL_RUN_BACKUP_URL",
    "FAL_REST_URL",
    "FAL_API_URL",
    "FAL_CDN_URL",
    "FAL_JWKS_URLS",
}


@pytest.fixture
def cold_stack(tmp_path: Path) -> Iterator[LocalStack]:
    config = LocalStackConfig(
        warm=False, visibility_timeout_s=2, state_file=tmp_path / "local.json", log_dir=tmp_path / "logs"
    )
    with LocalStack(config) as stack:
        yield stack


def test_each_function_gets_the_templates_environment_with_local_endpoints(cold_stack: LocalStack) -> None:
    resources: ProvisionedStack = cold_stack.resources
    for logical, spec in function_specs().items():
        env = dict(cold_stack.functions[logical].runtime.environment)
        template = resources.function_environment(logical)
        runtime = lambda_environment(spec, "us-east-1")
        changed = {k for k, v in template.items() if env.get(k) != v}
        added = set(env) - set(template) - set(runtime)

        assert changed <= LOCAL_ENDPOINT_VARIABLES | FAL_ENDPOINT_VARIABLES
        assert added <= LOCAL_ENDPOINT_VARIABLES | FAL_ENDPOINT_VARIABLES | SCALED_VARIABLES
        assert env["AWS_ENDPOINT_URL"] == cold_stack.aws_endpoint_url
        assert "LAMBDA_TASK_ROOT" not in env
    submit = cold_stack.functions["SubmitFunction"].runtime.environment
    assert submit["WEBHOOK_URL"] == f"{cold_stack.front_door.url}/webhooks/fal"
    store = cold_stack.functions["StoreFunction"].runtime.environment
    assert cold_stack.emulator is not None
    assert store["MEDIA_ALLOW_LOCAL"] == cold_stack.emulator.base_url
    assert (
        store["MEDIA_HOSTS"] == '["*.fal.media", "storage.googleapis.com/falserverless/"]'
    )  # deployed allowlist untouched


def test_a_short_visibility_timeout_scales_the_timeouts_and_leases_with_it(
    cold_stack: LocalStack,
) -> None:
    sqs = cold_stack.client("sqs")

    def visibility(queue: str) -> int:
        url = cold_stack.resources.queues[queue].url
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
        return int(attributes["Attributes"]["VisibilityTimeout"])

    store = cold_stack.functions["StoreFunction"].runtime
    # 360 : 5400, but never shorter than the submit's lease (40 s, below): the template's order
    assert (visibility("IntakeQueue"), visibility("OutputsQueue")) == (41, 30)
    # 900 : 5400 would be 5 s: the local floor (20 s) holds it, and the lease keeps 960 : 900 to it
    assert store.timeout_s == 20.0
    assert float(store.environment["STORE_LEASE_SECONDS"]) == pytest.approx(21.333)
    submit = cold_stack.functions["SubmitFunction"].runtime
    # 60 s : 360 s would be 0.33 s: the floor holds it too, and the lease keeps 120 : 60 to it
    assert submit.timeout_s == 20.0
    assert float(submit.environment["SUBMIT_LEASE_SECONDS"]) == pytest.approx(40.0)


def test_the_emulators_keys_are_in_secrets_manager_under_the_templates_names(cold_stack: LocalStack) -> None:
    assert cold_stack.emulator is not None
    secrets = cold_stack.secretsmanager()
    collect = cold_stack.functions["CollectFunction"].runtime.environment
    submit = cold_stack.functions["SubmitFunction"].runtime.environment

    api = secrets.get_secret_value(SecretId=submit["FAL_KEY_SECRET_ID"])["SecretString"]
    admin = secrets.get_secret_value(SecretId=collect["FAL_ADMIN_KEY_SECRET_ID"])["SecretString"]

    assert submit["FAL_KEY_SECRET_ID"] == "falflow/fal-api-key"
    assert api == cold_stack.emulator.api_key
    assert admin == cold_stack.emulator.admin_key


def test_the_state_file_describes_the_stack_and_goes_with_it(tmp_path: Path) -> None:
    path = tmp_path / "local.json"
    with LocalStack(LocalStackConfig(warm=False, state_file=path)) as stack:
        state = LocalState.read(path)
        assert state.is_alive()
        assert state.aws_endpoint_url == stack.aws_endpoint_url
        assert state.outputs["WebhookUrl"] == f"{stack.front_door.url}/webhooks/fal"
        assert state.outputs["InputBucketName"] == stack.resources.buckets["InputBucket"]
        assert state.fal is not None
        assert state.fal.queue_url.endswith("/queue")
    assert not path.exists()


def test_a_real_fal_key_points_the_functions_at_real_fal() -> None:
    config = LocalStackConfig(
        warm=False, fal_key="key-id:key-secret", parameters={"ReconcileAfterMinutes": "1"}
    )
    with LocalStack(config) as stack:
        env = stack.functions["SubmitFunction"].runtime.environment
        key = stack.secretsmanager().get_secret_value(SecretId=env["FAL_KEY_SECRET_ID"])["SecretString"]
        reconcile = stack.functions["ReconcileFunction"].runtime.environment
        collect = stack.functions["CollectFunction"].runtime.environment

        assert stack.emulator is None
        assert env["FAL_QUEUE_URL"] == "https://queue.fal.run"
        assert json.loads(env["FAL_JWKS_URLS"])[0] == "https://rest.fal.ai/.well-known/jwks.json"
        assert key == "key-id:key-secret"
        assert reconcile["RECONCILE_AFTER_MINUTES"] == "1"
        assert collect["FAL_ADMIN_KEY_SECRET_ID"] == ""  # no admin key given: usage is skipped
        assert "MEDIA_ALLOW_LOCAL" not in stack.functions["StoreFunction"].runtime.environment
        assert stack.state().fal is None


def test_a_second_stack_starts_after_the_first_stopped() -> None:
    with LocalStack(LocalStackConfig(warm=False)) as first:
        first.s3().put_object(Bucket=first.resources.buckets["InputBucket"], Key="jobs/x.txt", Body=b"x")
    with LocalStack(LocalStackConfig(warm=False)) as second:
        listed = second.s3().list_objects_v2(Bucket=second.resources.buckets["InputBucket"])
        assert listed.get("KeyCount") == 0


def test_schedules_deliver_schedulers_default_notification() -> None:
    spec = ScheduleSpec.from_event("ReconcileFunction", "Schedule", {"ScheduleExpression": "rate(5 minutes)"})
    event = spec.event()

    assert rate_seconds(spec.expression) == 300
    assert rate_seconds("rate(1 hour)") == 3600
    assert rate_seconds("cron(0 * * * ? *)") is None
    assert event["source"] == "aws.scheduler"
    assert event["detail-type"] == "Scheduled Event"
    assert event["resources"] == [
        "arn:aws:scheduler:us-east-1:123456789012:schedule/default/falflow-ReconcileFunctionSchedule"
    ]
    assert spec.event()["id"] != event["id"]
    with_input = ScheduleSpec.from_event("CollectFunction", "Schedule", {"Input": '{"full": true}'})
    assert with_input.event() == {"full": True}
