"""fal's completion webhook: verify first, then record through the completion hand-off, fast.

Answers (fal retries anything but a 2xx, 10 times over 2 hours):
- 401 for anything whose ED25519 signature does not verify — nothing is read or written;
- 503 when fal's JWKS cannot be fetched (transient; fal redelivers);
- 400 for a verified delivery without a ``job_id`` or with a body that is not a fal completion;
- 403 for a delivery signed for another fal account (where `FAL_WEBHOOK_USER_IDS` pins ours), or
  whose URL token is missing or is not its job's (`falflow.webhook.token`): issued for another
  job, or by another stack — nothing is read or written;
- 404 for a verified delivery naming a job we do not have. A job record is written before its
  request is sent to fal, so this is never a webhook that arrived early; it is a stale or foreign
  URL, and we have recorded nothing — so we do not say 200. The 4xx alarm makes it visible;
- 200 for every delivery that is now on record: the first, a duplicate, an ERROR payload, a
  completion for a foreign request id (kept aside), one that arrived after the job ended.

Why: docs/adr/0007-webhooks-are-verified-and-checked-against-their-job.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from falflow.completion.delivery import FalDelivery, InvalidDeliveryError
from falflow.completion.handoff import CompletionHandoff, HandoffOutcome
from falflow.fal.webhook import InvalidSignatureError, JwksCache, JwksUnavailableError, verify_fal_signature
from falflow.webhook.token import JOB_ID_PARAMETER, TOKEN_PARAMETER, WebhookTokens

logger = Logger(child=True)
metrics = Metrics()

# The fal user id a verified delivery was signed for, kept on its inbox object (`falflow fal-user-id`
# reads it back for operators to pin in FAL_WEBHOOK_USER_IDS).
USER_ID_METADATA = "fal-user-id"
_METRIC_NAMES = {outcome: "Webhook" + outcome.value.title().replace("_", "") for outcome in HandoffOutcome}


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP delivery, free of any Lambda event shape: the body is the exact bytes fal sent."""

    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookReply:
    status: int
    body: dict[str, Any]


class WebhookReceiver:
    def __init__(
        self,
        handoff: CompletionHandoff,
        jwks: JwksCache,
        tokens: WebhookTokens,
        *,
        tolerance_s: int = 300,
        allowed_user_ids: Collection[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._handoff = handoff
        self._jwks = jwks
        self._tokens = tokens
        self._tolerance_s = tolerance_s
        # fal signs the webhooks of every account with the same keys: where set, only deliveries
        # signed for our own account(s) may touch a job.
        self._allowed_user_ids = frozenset(allowed_user_ids)
        self._clock = clock

    def receive(self, request: WebhookRequest) -> WebhookReply:
        now = self._clock()
        try:
            verified = verify_fal_signature(
                request.headers, request.body, self._jwks, now=now, tolerance_s=self._tolerance_s
            )
        except InvalidSignatureError as error:
            metrics.add_metric(name="WebhookRejected", unit=MetricUnit.Count, value=1)
            logger.warning("webhook refused: signature does not verify", reason=error.reason)
            return WebhookReply(401, {"message": "invalid signature"})
        except JwksUnavailableError:
            metrics.add_metric(name="WebhookJwksUnavailable", unit=MetricUnit.Count, value=1)
            logger.exception("webhook not verified: fal's JWKS is unavailable")
            return WebhookReply(503, {"message": "cannot verify now, retry later"})
        if self._allowed_user_ids and verified.user_id not in self._allowed_user_ids:
            metrics.add_metric(name="WebhookForeignAccount", unit=MetricUnit.Count, value=1)
            logger.warning("webhook refused: signed for another fal account", request_id=verified.request_id)
            return WebhookReply(403, {"message": "delivery is for another fal account"})

        job_id = request.query.get(JOB_ID_PARAMETER, "")
        ids = {"job_id": job_id or None, "request_id": verified.request_id}
        if not job_id:
            return self._bad_request("webhook URL has no job_id", ids)
        if not self._tokens.matches(job_id, request.query.get(TOKEN_PARAMETER, "")):
            # Signed by fal, but not through the URL submit gave fal for this job (the token itself
            # is a credential: never logged).
            metrics.add_metric(name="WebhookTokenRefused", unit=MetricUnit.Count, value=1)
            logger.warning("webhook refused: its URL token is not this job's", extra=ids)
            return WebhookReply(403, {"message": "delivery is not for this job"})
        try:
            delivery = FalDelivery.parse(request.body)
        except InvalidDeliveryError as error:
            return self._bad_request(str(error), ids)
        if delivery.request_id not in (None, verified.request_id):
            return self._bad_request("body request_id differs from the signed request id", ids)

        result = self._handoff.record(
            job_id,
            verified.request_id,
            request.body,
            source="webhook",
            now=datetime.fromtimestamp(now, UTC),
            metadata={
                "fal-request-id": verified.request_id,
                USER_ID_METADATA: verified.user_id,
                "fal-timestamp": str(verified.timestamp),
                "fal-status": delivery.status,
            },
        )
        metrics.add_metric(name=_METRIC_NAMES[result.outcome], unit=MetricUnit.Count, value=1)
        if result.outcome is HandoffOutcome.UNKNOWN_JOB:
            logger.warning("verified webhook for a job we do not have", extra=ids)
            return WebhookReply(404, {"message": "unknown job"})
        logger.info("webhook recorded", outcome=result.outcome.value, fal_status=delivery.status, extra=ids)
        return WebhookReply(200, {"outcome": result.outcome.value})

    def _bad_request(self, reason: str, ids: dict[str, str | None]) -> WebhookReply:
        metrics.add_metric(name="WebhookMalformed", unit=MetricUnit.Count, value=1)
        logger.warning("verified webhook refused", reason=reason, extra=ids)
        return WebhookReply(400, {"message": reason})
