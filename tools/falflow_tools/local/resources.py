"""Creates the template's buckets, queues, tables and wiring on an AWS endpoint (moto) and
derives each function's environment from the template, so nothing is repeated by hand."""

from __future__ import annotations

import json
import secrets as token_source
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3

from falflow_tools.template import (
    Resolver,
    function_specs,
    load_template,
    parameter_defaults,
    resources_of_type,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

ACCOUNT_ID = "123456789012"  # moto's default account


@dataclass
class QueueInfo:
    logical_id: str
    name: str
    url: str
    arn: str
    visibility_timeout: int
    max_receive_count: int | None = None
    dead_letter_logical_id: str | None = None


@dataclass
class ProvisionedStack:
    """What was created, by logical id, and how to configure a function against it."""

    resolver: Resolver
    region: str
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # logical id -> ARN

    def physical(self, logical_id: str) -> str:
        return self.resolver.refs[logical_id]

    def queue(self, logical_id: str) -> QueueInfo:
        return self.queues[logical_id]

    def function_environment(
        self, logical_id: str, overrides: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The function's environment exactly as the template sets it, plus local overrides."""
        spec = function_specs(self.resolver.template)[logical_id]
        env = {key: _as_env(self.resolver.resolve(value)) for key, value in spec.environment.items()}
        env.update(overrides or {})
        return env


def _as_env(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else json.dumps(value)
        if isinstance(value, (dict, list))
        else str(value)
    )


def _queue_order(queues: Mapping[str, dict[str, Any]]) -> list[str]:
    """Dead-letter queues before the queues that redrive into them."""

    def target(spec: dict[str, Any]) -> str | None:
        arn = spec.get("Properties", {}).get("RedrivePolicy", {}).get("deadLetterTargetArn")
        return arn["Fn::GetAtt"][0] if isinstance(arn, dict) and "Fn::GetAtt" in arn else None

    return sorted(queues, key=lambda logical: target(queues[logical]) is not None)


def provision(
    *,
    session: boto3.session.Session | None = None,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    prefix: str = "falflow",
    parameters: Mapping[str, Any] | None = None,
    template: Mapping[str, Any] | None = None,
) -> ProvisionedStack:
    """Create every bucket, queue and table of the template; return their physical names."""
    template = template or load_template()
    session = session or boto3.session.Session(region_name=region)
    client_args: dict[str, Any] = {"region_name": region}
    if endpoint_url:
        client_args["endpoint_url"] = endpoint_url
    sqs: SQSClient = session.client("sqs", **client_args)
    s3: S3Client = session.client("s3", **client_args)
    dynamodb: DynamoDBClient = session.client("dynamodb", **client_args)
    secretsmanager: SecretsManagerClient = session.client("secretsmanager", **client_args)
    events: EventBridgeClient = session.client("events", **client_args)

    params = {**parameter_defaults(template), **(parameters or {})}
    resolver = Resolver(
        template=template,
        parameters=params,
        pseudo={
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": prefix,
        },
    )
    stack = ProvisionedStack(resolver=resolver, region=region)
    # Resources the local stack has no emulation for still need a name for !Ref and !Sub.
    for logical in template["Resources"]:
        resolver.refs[logical] = f"{prefix}-{logical}"

    _create_queues(stack, template, sqs, prefix)
    _create_tables(stack, template, dynamodb, prefix)
    _create_buckets(stack, template, s3, prefix)
    _create_generated_secrets(stack, template, secretsmanager, prefix)
    _create_rules(stack, template, events, prefix)
    return stack


def _create_queues(stack: ProvisionedStack, template: Mapping[str, Any], sqs: SQSClient, prefix: str) -> None:
    resolver = stack.resolver
    queues = resources_of_type(template, "AWS::SQS::Queue")
    for logical in _queue_order(queues):
        props = resolver.resolve(queues[logical].get("Properties", {}))
        name = f"{prefix}-{logical}"
        attributes: dict[Any, str] = {"VisibilityTimeout": str(props.get("VisibilityTimeout", 30))}
        if "MessageRetentionPeriod" in props:
            attributes["MessageRetentionPeriod"] = str(props["MessageRetentionPeriod"])
        redrive = props.get("RedrivePolicy")
        if redrive:
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": redrive["deadLetterTargetArn"],
                    "maxReceiveCount": str(redrive["maxReceiveCount"]),
                }
            )
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        resolver.refs[logical] = url
        resolver.attributes[(logical, "Arn")] = arn
        resolver.attributes[(logical, "QueueName")] = name
        dlq_logical = None
        if redrive:
            dlq_logical = next(
                q for q, info in stack.queues.items() if info.arn == redrive["deadLetterTargetArn"]
            )
        stack.queues[logical] = QueueInfo(
            logical_id=logical,
            name=name,
            url=url,
            arn=arn,
            visibility_timeout=int(attributes["VisibilityTimeout"]),
            max_receive_count=int(redrive["maxReceiveCount"]) if redrive else None,
            dead_letter_logical_id=dlq_logical,
        )


def _create_tables(
    stack: ProvisionedStack, template: Mapping[str, Any], dynamodb: DynamoDBClient, prefix: str
) -> None:
    resolver, region = stack.resolver, stack.region
    for logical, spec in resources_of_type(template, "AWS::DynamoDB::Table").items():
        props = resolver.resolve(spec["Properties"])
        name = f"{prefix}-{logical}"
        create: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            create["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        dynamodb.create_table(**create)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        resolver.refs[logical] = name
        resolver.attributes[(logical, "Arn")] = f"arn:aws:dynamodb:{region}:{ACCOUNT_ID}:table/{name}"
        stack.tables[logical] = name


def _create_buckets(stack: ProvisionedStack, template: Mapping[str, Any], s3: S3Client, prefix: str) -> None:
    resolver = stack.resolver
    buckets = resources_of_type(template, "AWS::S3::Bucket")
    for logical in buckets:
        name = f"{prefix}-{logical}".lower()
        s3.create_bucket(Bucket=name)  # us-east-1 takes no location constraint
        resolver.refs[logical] = name
        resolver.attributes[(logical, "Arn")] = f"arn:aws:s3:::{name}"
        stack.buckets[logical] = name
    for logical, spec in buckets.items():
        props = resolver.resolve(spec.get("Properties", {}))
        name = stack.buckets[logical]
        if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        queue_configs = props.get("NotificationConfiguration", {}).get("QueueConfigurations", [])
        if queue_configs:
            s3.put_bucket_notification_configuration(
                Bucket=name,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {"QueueArn": config["Queue"], "Events": [config["Event"]]} for config in queue_configs
                    ]
                },
            )


def _create_generated_secrets(
    stack: ProvisionedStack, template: Mapping[str, Any], secretsmanager: SecretsManagerClient, prefix: str
) -> None:
    """The template's own secrets (``GenerateSecretString``), generated as CloudFormation would;
    their !Ref is the ARN, as in AWS."""
    for logical, spec in resources_of_type(template, "AWS::SecretsManager::Secret").items():
        generate = stack.resolver.resolve(spec.get("Properties", {})).get("GenerateSecretString")
        if generate is None:
            raise ValueError(f"{logical}: only generated secrets are created locally")
        arn = secretsmanager.create_secret(
            Name=f"{prefix}-{logical}", SecretString=generated_secret(generate)
        )["ARN"]
        stack.resolver.refs[logical] = arn
        stack.secrets[logical] = arn


def generated_secret(generate: Mapping[str, Any]) -> str:
    """A random value as ``GenerateSecretString`` describes it (length, and no punctuation if asked)."""
    alphabet = string.ascii_letters + string.digits
    if not generate.get("ExcludePunctuation"):
        alphabet += string.punctuation
    return "".join(token_source.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))


# ------------------------------------------------------------------ local additions to the stack


def template_outputs(stack: ProvisionedStack) -> dict[str, str]:
    """The template's `Outputs`, resolved to the local names (what `--stack` reads from CloudFormation)."""
    outputs = stack.resolver.template.get("Outputs", {})
    return {name: str(stack.resolver.resolve(spec["Value"])) for name, spec in outputs.items()}


def set_visibility_timeout(stack: ProvisionedStack, sqs: SQSClient, logical_id: str, seconds: int) -> None:
    """Shorten a queue's visibility timeout, so a failed message comes back in seconds locally."""
    info = stack.queues[logical_id]
    sqs.set_queue_attributes(QueueUrl=info.url, Attributes={"VisibilityTimeout": str(seconds)})
    info.visibility_timeout = seconds


def _event_bus(stack: ProvisionedStack, events: EventBridgeClient) -> str:
    """The stack's bus (the EventBusName parameter), created if it is not the default one."""
    bus = str(stack.resolver.parameters.get("EventBusName") or "default")
    if bus != "default" and not events.list_event_buses(NamePrefix=bus).get("EventBuses"):
        events.create_event_bus(Name=bus)
    return bus


def _create_rules(
    stack: ProvisionedStack, template: Mapping[str, Any], events: EventBridgeClient, prefix: str
) -> None:
    """The template's EventBridge rules with their targets (falflow's own event receipts)."""
    rules = resources_of_type(template, "AWS::Events::Rule")
    if not rules:
        return
    bus = _event_bus(stack, events)
    for logical, spec in rules.items():
        props = stack.resolver.resolve(spec.get("Properties", {}))
        name = f"{prefix}-{logical}"
        arn = events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(props["EventPattern"]))[
            "RuleArn"
        ]
        targets = [{"Id": target["Id"], "Arn": target["Arn"]} for target in props.get("Targets", [])]
        if targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=targets)  # type: ignore[arg-type]
        stack.resolver.refs[logical] = name
        stack.resolver.attributes[(logical, "Arn")] = arn


def create_event_tap(
    stack: ProvisionedStack, events: EventBridgeClient, sqs: SQSClient, *, prefix: str = "falflow"
) -> QueueInfo:
    """An EventBridge rule sending falflow's events from the stack's bus to an SQS queue.

    Not part of the template (subscribers bring their own rules); locally it lets the demo, the
    tests and `falflow` show the "Job Completed" / "Job Failed" events the store publishes.
    """
    bus = _event_bus(stack, events)
    name = f"{prefix}-events"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps({"source": ["falflow"]}))
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "events-queue", "Arn": arn}])
    return QueueInfo(logical_id="EventsTap", name=name, url=url, arn=arn, visibility_timeout=30)


def create_fal_secrets(
    stack: ProvisionedStack, secrets: SecretsManagerClient, *, api_key: str, admin_key: str | None
) -> dict[str, str]:
    """Store the fal keys under the secret names the template's parameters give the functions."""
    created = {}
    for parameter, value in (("FalKeySecretName", api_key), ("FalAdminKeySecretName", admin_key)):
        name = str(stack.resolver.parameters.get(parameter) or "")
        if name and value:
            secrets.create_secret(Name=name, SecretString=value)
            created[parameter] = name
    return created
