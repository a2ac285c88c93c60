"""The outputs queue message: which job's recorded completion the store should finish."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

CompletionSource = Literal["webhook", "reconcile"]


class OutputsMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    request_id: str
    completion_key: str
    source: CompletionSource = "webhook"
