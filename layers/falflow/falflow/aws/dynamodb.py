"""What every DynamoDB adapter of falflow reads the same way from boto3's errors."""

from __future__ import annotations

from botocore.exceptions import ClientError


def is_condition_failure(error: ClientError) -> bool:
    """The write's condition did not hold: a refusal the caller expects, not a fault."""
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
