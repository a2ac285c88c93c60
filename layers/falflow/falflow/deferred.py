"""The base of falflow's pydantic models: each builds its validator on first use, not at import.

A pydantic model compiles its validator and serializer when its class is created; a cold start that
imports a package's models would pay for every one of them (falflow.fal.platform's alone ~100 ms),
though an invocation validates a few. ``defer_build`` builds them once, at the first validation,
and the class keeps them for the container.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DeferredModel(BaseModel):
    model_config = ConfigDict(defer_build=True)
