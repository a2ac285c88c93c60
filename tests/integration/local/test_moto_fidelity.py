"""The local stack's moto patches (falflow_tools.local.fidelity) change how fast moto answers, never
what it answers: after any mix of writes, each index query returns what a scan of the table says it
should; a queue's sends and receives no longer count the queue, and its counts stay right."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any
from unittest import mock

from moto.sqs.models import Message

from falflow.aws.clients import aws_client
from falflow_tools.local.resources import ProvisionedStack

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SHARDS = [f"{state}#{n}" for state in ("SUBMITTED", "STORING", "COMPLETED") for n in range(3)]
REQUESTS = [f"req-{n}" for n in range(4)]


def _write_at_random(dynamodb: DynamoDBClient, table: str, rng: random.Random, writes: int) -> None:
    for step in range(writes):
        job_id = f"job-{rng.randrange(40)}"
        key = {"job_id": {"S": job_id}}
        action = rng.random()
        if action < 0.35:  # a whole item, with or without either index's key
            item: dict[str, Any] = {**key, "state_changed_at": {"S": f"2026-12-02T00:00:{step % 60:02d}"}}
            if rng.random() < 0.8:
                item["state_shard"] = {"S": rng.choice(SHARDS)}
            if rng.random() < 0.5:
                item["request_id"] = {"S": rng.choice(REQUESTS)}
            dynamodb.put_item(TableName=table, Item=item)
        elif action < 0.8:  # an update moves the item to another shard, or out of an index
            if rng.random() < 0.7:
                dynamodb.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression="SET state_shard = :s, state_changed_at = :t",
                    ExpressionAttributeValues={
                        ":s": {"S": rng.choice(SHARDS)},
                        ":t": {"S": f"2026-12-02T00:01:{step % 60:02d}"},
                    },
                )
            else:
                removal = "REMOVE state_shard, request_id"
                dynamodb.update_item(TableName=table, Key=key, UpdateExpression=removal)
        else:
            dynamodb.delete_item(TableName=table, Key=key)


def _queried(dynamodb: DynamoDBClient, table: str, index: str, attribute: str, value: str) -> list[str]:
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table,
        IndexName=index,
        KeyConditionExpression="#k = :v",
        ExpressionAttributeNames={"#k": attribute},
        ExpressionAttributeValues={":v": {"S": value}},
        Limit=3,  # pages too
    )
    return sorted(item["job_id"]["S"] for page in pages for item in page["Items"])


def test_index_queries_answer_what_a_scan_of_the_table_says(aws: ProvisionedStack) -> None:
    dynamodb = aws_client("dynamodb")
    table = aws.tables["JobsTable"]
    rng = random.Random(7)
    for _ in range(5):
        # Queried between rounds of writes, so the index is built early and then kept up to date.
        _write_at_random(dynamodb, table, rng, writes=60)
        items = dynamodb.scan(TableName=table)["Items"]
        for index, attribute, values in (
            ("ByStateShard", "state_shard", SHARDS),
            ("ByRequestId", "request_id", REQUESTS),
        ):
            for value in values:
                expected = sorted(i["job_id"]["S"] for i in items if i.get(attribute, {}).get("S") == value)
                assert _queried(dynamodb, table, index, attribute, value) == expected, (index, value)


def test_queue_sends_and_receives_do_not_count_the_queue_and_its_counts_stay_right(
    aws: ProvisionedStack,
) -> None:
    sqs = aws_client("sqs")
    url = sqs.create_queue(QueueName="waiting")["QueueUrl"]  # the template's hold S3's test events
    for start in range(0, 200, 10):
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"m{start + n}"} for n in range(10)]
        )
    with mock.patch.object(Message, "visible", new_callable=mock.PropertyMock, return_value=True) as looked:
        sqs.send_message(QueueUrl=url, MessageBody="one more")
        assert looked.call_count == 0  # moto's own send looked at every waiting message three times
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)["Messages"]
        # One pass over the waiting messages, not one per message returned.
        assert looked.call_count <= 2 * 201
    assert len(received) == 10
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"])
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)

    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]

    assert counts["ApproximateNumberOfMessages"] == "191"  # 201 sent, 10 taken
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "9"  # taken, one of them deleted
    assert counts["ApproximateNumberOfMessagesDelayed"] == "1"
