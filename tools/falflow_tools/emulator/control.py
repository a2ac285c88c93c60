"""``EmulatorControl``: a small client of ``/_emulator``, for tests and tools.

It talks HTTP, so it drives an emulator in this process, in another process or started by the
CLI alike.
"""

from __future__ import annotations

import time
from typing import Any, Self

import httpx
from pydantic import TypeAdapter

from falflow_tools.emulator.account import ADMIN_LOCK, AccountView
from falflow_tools.emulator.config import FaultConfig
from falflow_tools.emulator.state import JobView, RequestRecord, ServedFile, Stats, WebhookAttempt

# Reads of a whole run's record (every request, job or served file) may take this long.
SLOW_READ_S = 120.0


class EmulatorControl:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self._client = httpx.Client(base_url=f"{base_url.rstrip('/')}/_emulator", timeout=timeout_s)

    def _get(self, path: str, *, timeout_s: float | None = None) -> Any:
        timeout = httpx.Timeout(timeout_s) if timeout_s else self._client.timeout
        response = self._client.get(path, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: Any = None) -> Any:
        response = self._client.post(path, json=body if body is not None else {})
        response.raise_for_status()
        return response.json()

    def set_faults(self, faults: FaultConfig | None = None, /, **fields: Any) -> FaultConfig:
        """Replace the run's faults: a ``FaultConfig`` or its fields, e.g.
        ``set_faults(submit={"rate_503": 1.0, "max_faults": 2}, webhook={"drop_rate": 0.5})``."""
        if faults is not None and fields:
            raise TypeError("pass a FaultConfig or its fields, not both")
        config = faults or FaultConfig.model_validate(fields)
        return FaultConfig.model_validate(self._post("/faults", config.model_dump(mode="json")))

    def faults(self) -> FaultConfig:
        return FaultConfig.model_validate(self._get("/faults"))

    def requests(self) -> list[RequestRecord]:
        return TypeAdapter(list[RequestRecord]).validate_python(self._get("/requests", timeout_s=SLOW_READ_S))

    def jobs(self) -> list[JobView]:
        return TypeAdapter(list[JobView]).validate_python(self._get("/jobs", timeout_s=SLOW_READ_S))

    def job(self, request_id: str) -> JobView:
        for job in self.jobs():
            if job.request_id == request_id:
                return job
        raise KeyError(request_id)

    def webhooks(self) -> list[WebhookAttempt]:
        return TypeAdapter(list[WebhookAttempt]).validate_python(self._get("/webhooks"))

    def served_files(self) -> list[ServedFile]:
        """Every output file the CDN serves, with its size and SHA-256."""
        # Hashing every file of a 1,000-job run takes the emulator longer than the usual timeout.
        return TypeAdapter(list[ServedFile]).validate_python(self._get("/files", timeout_s=SLOW_READ_S))

    def stats(self) -> Stats:
        return Stats.model_validate(self._get("/stats"))

    def reset(self) -> None:
        self._post("/reset")

    def rotate_key(self, *, keep_previous: bool = True) -> str:
        """Sign with a new key from now on; returns its kid. The old key stays published if kept."""
        return str(self._post("/rotate-key", {"keep_previous": keep_previous})["kid"])

    def account(self) -> AccountView:
        """The account's balance and lock."""
        return AccountView.model_validate(self._get("/account"))

    def lock_account(self, reason: str = ADMIN_LOCK) -> AccountView:
        """Lock the account: its submits and uploads answer 403 "User is locked. Reason: <reason>"."""
        return AccountView.model_validate(self._post("/account/lock", {"reason": reason}))

    def unlock_account(self) -> AccountView:
        return AccountView.model_validate(self._post("/account/unlock"))

    def set_balance(self, balance_usd: float) -> AccountView:
        """Set the balance; one no longer below the threshold lifts an exhausted-balance lock."""
        return AccountView.model_validate(self._post("/account/balance", {"balance_usd": balance_usd}))

    def wait_idle(self, timeout_s: float = 10.0, poll_s: float = 0.02) -> Stats:
        """Wait until no job is running and no webhook is being delivered."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            if stats.idle:
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"emulator still busy after {timeout_s} s: {stats}")
            time.sleep(poll_s)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
