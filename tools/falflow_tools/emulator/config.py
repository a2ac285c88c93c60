"""Settings of one emulator run: keys, timings, media sizes and the faults to inject.

Defaults are tuned for tests (jobs take a fraction of a second); the CLI and the local stack pass
slower, more fal-like timings. Every knob is a plain pydantic field so a run can be described as
JSON (the ``POST /_emulator/faults`` body is a ``FaultConfig``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]

HttpGroup = Literal["submit", "status", "result", "cancel", "cdn", "platform", "upload"]
HTTP_GROUPS: tuple[HttpGroup, ...] = ("submit", "status", "result", "cancel", "cdn", "platform", "upload")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpFaults(_Strict):
    """Faults for one group of endpoints.

    The rates are disjoint probabilities drawn from one number per request, so their sum is the
    chance that a request is faulted at all. ``timeout`` answers normally but only after
    ``timeout_hold_s`` (the work is done, the client has given up: a lost response);
    ``reset`` closes the socket before the request is handled. The two ``_after`` faults let the
    request be handled first (a submit is queued, as fal would have it) and then lose the reply:
    ``reset_after`` closes the socket instead of answering, ``proxy_504_after`` answers a proxy's
    504 that carries no request id and is not fal's nginx ingress page (docs/fal-contract.md §6).
    """

    rate_429: Rate = 0.0
    rate_500: Rate = 0.0
    rate_503: Rate = 0.0
    rate_timeout: Rate = 0.0
    rate_reset: Rate = 0.0
    rate_reset_after: Rate = 0.0
    rate_proxy_504_after: Rate = 0.0
    timeout_hold_s: Seconds = 10.0
    # Stop injecting after this many faults in the group ("the first two submits fail").
    max_faults: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _rates_fit_in_one_draw(self) -> Self:
        if self.total_rate > 1.0 + 1e-9:
            raise ValueError("the fault rates of one group must add up to at most 1")
        return self

    @property
    def total_rate(self) -> float:
        return sum(rate for _, rate in self.rates())

    def rates(self) -> tuple[tuple[str, float], ...]:
        """Each fault with its rate, in the order one draw is compared against them."""
        return (
            ("429", self.rate_429),
            ("500", self.rate_500),
            ("503", self.rate_503),
            ("timeout", self.rate_timeout),
            ("reset", self.rate_reset),
            ("reset_after", self.rate_reset_after),
            ("proxy_504_after", self.rate_proxy_504_after),
        )


class WebhookFaults(_Strict):
    """How deliveries misbehave; each delivery draws each fault independently."""

    drop_rate: Rate = 0.0
    duplicate_rate: Rate = 0.0
    delay_rate: Rate = 0.0
    delay_s: Seconds = 1.0
    # A reordered delivery waits until a later one has been sent (or reorder_max_hold_s passed).
    reorder_rate: Rate = 0.0
    reorder_max_hold_s: Seconds = 2.0


class FaultConfig(_Strict):
    """Everything that can go wrong in a run, reproducible from ``seed``."""

    seed: int = 0
    submit: HttpFaults = Field(default_factory=HttpFaults)
    status: HttpFaults = Field(default_factory=HttpFaults)
    result: HttpFaults = Field(default_factory=HttpFaults)
    cancel: HttpFaults = Field(default_factory=HttpFaults)
    cdn: HttpFaults = Field(default_factory=HttpFaults)
    platform: HttpFaults = Field(default_factory=HttpFaults)
    upload: HttpFaults = Field(default_factory=HttpFaults)
    job_error_rate: Rate = 0.0
    payload_error_rate: Rate = 0.0
    # fal retried the request internally, so gateway_request_id differs from request_id.
    gateway_retry_rate: Rate = 0.0
    # fal rerouted the request to an equivalent endpoint (``EmulatorConfig.model_fallbacks``),
    # unless the request sent X-Fal-Disable-Fallbacks.
    fallback_rate: Rate = 0.0
    webhook: WebhookFaults = Field(default_factory=WebhookFaults)
    # Slow CDN: output and upload downloads are throttled to this many bytes per second.
    cdn_bytes_per_s: int | None = Field(default=None, gt=0)

    def for_group(self, group: HttpGroup) -> HttpFaults:
        faults: HttpFaults = getattr(self, group)
        return faults


InstanceType = Literal["gpu_8x_h100_sxm5", "gpu_1x_h100_sxm5"]
Region = Literal["us-west", "us-central", "us-east", "eu-north", "eu-west", "other"]
Sector = Literal["sector_1", "sector_2", "sector_3"]
InstanceStatus = Literal["ready", "init", "pending", "provisioning", "stopped", "unknown"]


class ComputeInstance(_Strict):
    """A row of ``GET /v1/compute/instances``: configured ones, and those created through the API."""

    id: str
    instance_type: InstanceType = "gpu_1x_h100_sxm5"
    region: Region = "us-east"
    sector: Sector | None = None
    ip: str | None = None
    status: InstanceStatus = "ready"
    creator_user_nickname: str | None = None


class EmulatorConfig(_Strict):
    """One emulator run. The defaults give fast timings for tests."""

    # Keys are "id:secret" like real FAL_KEYs; the id part names the key in usage records.
    api_keys: list[str] = Field(default_factory=lambda: ["emulator-key:emulator-secret"], min_length=1)
    admin_keys: list[str] = Field(
        default_factory=lambda: ["emulator-admin:emulator-admin-secret"], min_length=1
    )
    user_id: str = "emulator-user"

    # Timing. A job waits queue_wait_s, then for a free runner (concurrency per app), then runs.
    queue_wait_s: Seconds = 0.02
    run_time_s: Seconds = 0.05
    concurrency: int = Field(default=64, ge=1)
    log_interval_s: Seconds = 0.02
    status_stream_interval_s: Seconds = 0.05
    # Result retention follows fal: 1 h after completion, 6 min for results >= 10 KB, unless
    # payload storage is on (the default, 30 days); X-Fal-Store-IO: 0 turns storage off.
    result_retention_s: Seconds = 3600.0
    large_result_retention_s: Seconds = 360.0
    stored_result_retention_s: Seconds = 30 * 86400.0
    honour_cancel_in_progress: bool = False
    input_fetch_timeout_s: Seconds = 10.0

    # Webhooks: fal waits 15 s for the reply and retries 10 times (over 2 h; here much faster).
    webhook_timeout_s: Seconds = 15.0
    webhook_max_retries: int = Field(default=10, ge=0)
    webhook_backoff_s: Seconds = 0.1
    webhook_backoff_factor: float = Field(default=2.0, ge=1.0)
    webhook_backoff_cap_s: Seconds = 2.0
    # Attempts in flight at once; the others wait their turn in the dispatcher. Left to queue in
    # the HTTP client's pool instead, a burst of thousands (a 1,000-line batch finishing against a
    # slow receiver) cost httpcore's pool a pass over its queue for every request it placed, and
    # the emulator's whole event loop stalled on it. fal documents no limit; each attempt's
    # timeout still starts when it is sent.
    webhook_concurrency: int = Field(default=32, ge=1)

    # Media. Sizes are exact file sizes; files are generated while they are streamed.
    video_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 2**30)
    # None: derived from the requested duration (16-bit mono at 44.1 kHz). WAV caps at 4 GiB.
    audio_bytes: int | None = Field(default=None, ge=1024, le=2**32 - 1)
    max_image_side: int = Field(default=4096, ge=64)
    cdn_token_ttl_s: Seconds = 3600.0

    # Model fallbacks: endpoint id -> the "equivalent" endpoint fal may reroute it to.
    model_fallbacks: dict[str, str] = Field(default_factory=dict)

    # Platform API.
    percent_discount: float | None = Field(default=None, ge=0.0, le=100.0)
    compute_permission: bool = True
    compute_instances: list[ComputeInstance] = Field(default_factory=list)
    webhook_ip_ranges: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])

    # The account's credits: each billed request is charged; below the threshold the account locks.
    starting_balance_usd: float = 1000.0
    lock_threshold_usd: float = 0.0

    # Where uploads are kept (a temporary directory when None) and the base URL advertised in
    # response URLs when the emulator sits behind something (the bound address when None).
    storage_dir: Path | None = None
    public_base_url: str | None = None
    request_log_limit: int = Field(default=10_000, ge=1)

    faults: FaultConfig = Field(default_factory=FaultConfig)
