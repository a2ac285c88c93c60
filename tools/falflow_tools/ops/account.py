"""Which fal account signs the stack's deliveries: the user id to pin in `FalWebhookUserIds`.

fal documents no API that returns the id it puts in ``X-Fal-Webhook-User-Id`` (docs/fal-contract.md
§3), so the honest source is a delivery itself: the webhook keeps the signed user id of every
verified delivery for one of our jobs (its URL token matched) as metadata of its ``inbox/`` object.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from falflow.completion.keys import INBOX_PREFIX
from falflow.webhook.receiver import USER_ID_METADATA
from falflow_tools.ops.target import OpsError, Target

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectTypeDef

# Listing is by key, not time: read this many keys, then look at the newest deliveries among them.
MAX_LISTED = 5000
DEFAULT_DELIVERIES = 20


@dataclass(frozen=True)
class WebhookUserId:
    user_id: str
    deliveries: int
    last_seen: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "deliveries": self.deliveries,
            "last_seen": self.last_seen.isoformat(),
        }


def webhook_user_ids(target: Target, *, deliveries: int = DEFAULT_DELIVERIES) -> list[WebhookUserId]:
    """The fal user ids of the newest ``deliveries`` webhook deliveries kept in the inbox."""
    s3 = target.s3()
    bucket = target.output("OutputBucketName")
    listed: list[ObjectTypeDef] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=INBOX_PREFIX):
        listed.extend(page.get("Contents", []))
        if len(listed) >= MAX_LISTED:
            break
    newest = sorted(listed, key=lambda item: item["LastModified"], reverse=True)
    counts: Counter[str] = Counter()
    last_seen: dict[str, datetime] = {}
    for item in newest:
        if sum(counts.values()) >= deliveries:
            break
        metadata = s3.head_object(Bucket=bucket, Key=item["Key"]).get("Metadata", {})
        user_id = metadata.get(USER_ID_METADATA)
        if not user_id:  # a result the reconciler fetched itself: no signed header
            continue
        counts[user_id] += 1
        last_seen.setdefault(user_id, item["LastModified"])
    if not counts:
        raise OpsError(
            f"no webhook delivery kept in s3://{bucket}/{INBOX_PREFIX} yet: run one job "
            "(falflow submit … --wait) and ask again"
        )
    return [WebhookUserId(user_id, n, last_seen[user_id]) for user_id, n in counts.most_common()]
