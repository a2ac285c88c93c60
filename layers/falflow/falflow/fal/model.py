"""The base of every model parsed from a fal reply."""

from __future__ import annotations

from pydantic import ConfigDict

from falflow.deferred import DeferredModel


class FalModel(DeferredModel):
    # fal adds fields over time; keep them (``model_extra``) instead of failing or dropping them.
    model_config = ConfigDict(extra="allow")
