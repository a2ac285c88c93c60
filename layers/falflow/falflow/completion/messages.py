"""The outputs queue message: which job's recorded completion the store should finish."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import ConfigDict

from falflow.deferred import DeferredModel

CompletionSource = Literal["webhook", "reconcile"]

# The trail action of a job whose outputs message the store sent to the DLQ, with its reason.
OUTPUTS_DEAD_LETTERED: Final = "dead_lettered"


class OutputsMessage(DeferredModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    request_id: str
    completion_key: str
    source: CompletionSource = "webhook"
    # The job's hand-off this message is (its `completion_enqueued_at`): a DLQ entry of an earlier
    # hand-off is not the one the job waits for. None in messages sent before it was carried.
    handed_over_at: str | None = None


def outputs_message_jobs(body: str) -> tuple[str, ...]:
    """The job an outputs message's body is for; none if it is no outputs message. (A message SQS
    moved to the DLQ itself carries only its body.)"""
    try:
        return (OutputsMessage.model_validate_json(body).job_id,)
    except ValueError:
        return ()
