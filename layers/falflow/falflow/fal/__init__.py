"""A small typed client for the parts of fal.ai that falflow uses (queue, platform, CDN, webhooks).

Every client takes ``api_key: Callable[[], str]`` (a key provider reading Secrets Manager through a
cache) so no secret lives in settings, and shares one retry policy from ``FalSettings``.
"""

from falflow.fal.endpoints import EndpointId
from falflow.fal.errors import (
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
    AnalyticsBucket,
    AnalyticsReport,
    AnalyticsResult,
    BillingEvent,
    ComputeInstance,
    CostEstimate,
    FalPlatformClient,
    Meta,
    ModelInfo,
    ModelMetadata,
    Price,
    RequestHistoryItem,
    UsageBucket,
    UsageLineItem,
    UsageReport,
)
from falflow.fal.ports import FalPlatform, FalQueue, FalRequestHistory, FalStorage
from falflow.fal.queue import (
    CancelOutcome,
    FalQueueClient,
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
    "AnalyticsBucket",
    "AnalyticsReport",
    "AnalyticsResult",
    "BillingEvent",
    "CancelOutcome",
    "ComputeInstance",
    "CostEstimate",
    "EndpointId",
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
