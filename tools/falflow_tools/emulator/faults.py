"""Deciding, reproducibly, which requests, jobs and webhooks go wrong.

Every kind of decision draws from its own ``random.Random`` seeded from the run's seed and the
decision's name, so the faults one test sees do not depend on traffic elsewhere (a status poll
does not shift which submit fails).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Literal, get_args

from falflow_tools.emulator.config import FaultConfig, HttpGroup

HttpFault = Literal["429", "500", "503", "timeout", "reset", "reset_after", "proxy_504_after"]
_FAULTS: dict[str, HttpFault] = {fault: fault for fault in get_args(HttpFault)}
# Faults that let the request be handled (a submit queued) and then lose its reply.
AFTER_HANDLING: frozenset[HttpFault] = frozenset({"reset_after", "proxy_504_after"})


def http_group(method: str, path: str) -> HttpGroup | None:
    """The fault group of a request path (None: never faulted, e.g. JWKS and control)."""
    if path.startswith("/api/v1/"):
        return "platform"
    if path.startswith("/run/"):
        return "submit"
    if path.startswith("/queue/"):
        if method == "POST":
            return "submit"
        if method == "PUT":
            return "cancel"
        return "status" if "/status" in path.rsplit("/requests/", 1)[-1] else "result"
    if path.startswith("/rest/storage/"):
        return "upload"
    if path.startswith("/cdn/"):
        return "cdn" if method in ("GET", "HEAD") else "upload"
    return None


class FaultInjector:
    def __init__(self, config: FaultConfig) -> None:
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        """Replace the faults of the run and restart every random sequence from the seed."""
        self.config = config
        self._rngs: dict[str, random.Random] = {}
        self._injected: Counter[HttpGroup] = Counter()

    def _rng(self, stream: str) -> random.Random:
        rng = self._rngs.get(stream)
        if rng is None:
            # A simulation, not cryptography.
            rng = self._rngs[stream] = random.Random(f"{self.config.seed}:{stream}")  # noqa: S311  # nosec B311
        return rng

    def chance(self, stream: str, rate: float) -> bool:
        """True with probability ``rate``, drawn from the named stream."""
        return rate > 0 and self._rng(stream).random() < rate

    def http_fault(self, group: HttpGroup) -> HttpFault | None:
        faults = self.config.for_group(group)
        if faults.total_rate == 0:
            return None
        if faults.max_faults is not None and self._injected[group] >= faults.max_faults:
            return None
        draw = self._rng(f"http:{group}").random()
        threshold = 0.0
        for fault, rate in faults.rates():
            threshold += rate
            if draw < threshold:
                self._injected[group] += 1
                return _FAULTS[fault]
        return None
