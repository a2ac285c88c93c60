"""The base of every model parsed from a fal reply."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FalModel(BaseModel):
    # fal adds fields over time; keep them (``model_extra``) instead of failing or dropping them.
    model_config = ConfigDict(extra="allow")
