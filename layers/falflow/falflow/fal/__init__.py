"""A small typed client for the parts of fal.ai that falflow uses (queue, platform, CDN, webhooks).

Every client takes ``api_key: Callable[[], str]`` (a key provider reading Secrets Manager through a
cache) so no secret lives in settings, and shares one retry policy from ``FalSettings``.

The names below are loaded on first use (PEP 562), so importing one part (``falflow.fal.queue``)
does not import the others: the store and reconcile never load the webhook verifier, nor with it
``cryptography``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from falflow.fal.endpoints import EndpointId
    from falflow.fal.errors import (
        FalAccountLockedError,
        FalAuthError,
        FalError,
        FalNotFoundError,
        FalPlatformError,
        FalRateLimitedError,
        FalRequestTimeoutError,
        FalServerError,
        FalTransportError,
        FalValidationError,
        error_from_response,
    )
    from falflow.fal.http import FalHttp, RetryPolicy, build_http_client
    from falflow.fal.platform import (
        AccountBilling,
        AnalyticsBucket,
        AnalyticsReport,
        AnalyticsResult,
        BillingEvent,
        ComputeInstance,
        CostEstimate,
        Credits,
        FalPlatformClient,
        Meta,
        ModelInfo,
        ModelMetadata,
        PayloadDeletion,
        Price,
        RequestHistoryItem,
        UsageBucket,
        UsageLineItem,
        UsageReport,
    )
    from falflow.fal.ports import FalAccount, FalPlatform, FalQueue, FalRequestHistory, FalStorage
    from falflow.fal.queue import (
        CancelOutcome,
        FalQueueClient,
        OutputLifecycle,
        QueueLog,
        QueueStatus,
        QueueUrls,
        Submission,
    )
    from falflow.fal.storage import FalStorageClient
    from falflow.fal.webhook import (
        InvalidSignatureError,
        JwksCache,
        JwksUnavailableError,
        VerifiedDelivery,
        verify_fal_signature,
    )

__all__ = [
    "AccountBilling",
    "AnalyticsBucket",
    "AnalyticsReport",
    "AnalyticsResult",
    "BillingEvent",
    "CancelOutcome",
    "ComputeInstance",
    "CostEstimate",
    "Credits",
    "EndpointId",
    "FalAccount",
    "FalAccountLockedError",
    "FalAuthError",
    "FalError",
    "FalHttp",
    "FalNotFoundError",
    "FalPlatform",
    "FalPlatformClient",
    "FalPlatformError",
    "FalQueue",
    "FalQueueClient",
    "FalRateLimitedError",
    "FalRequestHistory",
    "FalRequestTimeoutError",
    "FalServerError",
    "FalStorage",
    "FalStorageClient",
    "FalTransportError",
    "FalValidationError",
    "InvalidSignatureError",
    "JwksCache",
    "JwksUnavailableError",
    "Meta",
    "ModelInfo",
    "ModelMetadata",
    "OutputLifecycle",
    "PayloadDeletion",
    "Price",
    "QueueLog",
    "QueueStatus",
    "QueueUrls",
    "RequestHistoryItem",
    "RetryPolicy",
    "Submission",
    "UsageBucket",
    "UsageLineItem",
    "UsageReport",
    "VerifiedDelivery",
    "build_http_client",
    "error_from_response",
    "verify_fal_signature",
]

# Which module of this package defines each public name.
_MODULE_OF: dict[str, str] = {
    "AccountBilling": "platform",
    "AnalyticsBucket": "platform",
    "AnalyticsReport": "platform",
    "AnalyticsResult": "platform",
    "BillingEvent": "platform",
    "CancelOutcome": "queue",
    "ComputeInstance": "platform",
    "CostEstimate": "platform",
    "Credits": "platform",
    "EndpointId": "endpoints",
    "FalAccount": "ports",
    "FalAccountLockedError": "errors",
    "FalAuthError": "errors",
    "FalError": "errors",
    "FalHttp": "http",
    "FalNotFoundError": "errors",
    "FalPlatform": "ports",
    "FalPlatformClient": "platform",
    "FalPlatformError": "errors",
    "FalQueue": "ports",
    "FalQueueClient": "queue",
    "FalRateLimitedError": "errors",
    "FalRequestHistory": "ports",
    "FalRequestTimeoutError": "errors",
    "FalServerError": "errors",
    "FalStorage": "ports",
    "FalStorageClient": "storage",
    "FalTransportError": "errors",
    "FalValidationError": "errors",
    "InvalidSignatureError": "webhook",
    "JwksCache": "webhook",
    "JwksUnavailableError": "webhook",
    "Meta": "platform",
    "ModelInfo": "platform",
    "ModelMetadata": "platform",
    "OutputLifecycle": "queue",
    "PayloadDeletion": "platform",
    "Price": "platform",
    "QueueLog": "queue",
    "QueueStatus": "queue",
    "QueueUrls": "queue",
    "RequestHistoryItem": "platform",
    "RetryPolicy": "http",
    "Submission": "queue",
    "UsageBucket": "platform",
    "UsageLineItem": "platform",
    "UsageReport": "platform",
    "VerifiedDelivery": "webhook",
    "build_http_client": "http",
    "error_from_response": "errors",
    "verify_fal_signature": "webhook",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value
