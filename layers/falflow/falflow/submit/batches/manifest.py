"""What each line of a batch manifest asks (falflow.batches.lines reads them).

Each line is a JSON object: ``custom_id`` (required, unique in the file) and the job message's
fields (``model``, ``input``, ``files``, ``priority``, ``start_timeout``, ``metadata``,
``output_prefix`` and fal's options) but ``job_id``, which the batch and ``custom_id`` derive. A first
line ``{"defaults": {...}}`` gives every line its model, priority, metadata (merged, the line's
keys winning), output prefix and options. A line that does not parse or validate is a `BadLine`
with its reason; it never stops the batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from falflow.batches.lines import DEFAULTS_KEY, MAX_LINE_BYTES, RawLine
from falflow.jobs.batch import MAX_CUSTOM_ID_CHARS, JobBatch
from falflow.submit.request import JobRequest, RequestRejectedError, validate_request

# The limits of one manifest (README "Batches"): OpenAI Batch's file size, Anthropic's line count.
MAX_LINES: Final = 100_000
MAX_MANIFEST_BYTES: Final = 200 * 1024 * 1024
# More bad lines than this and the manifest is refused whole: it is not the file that was meant
# (and the batch's record, which keeps each bad line's reason, stays well within DynamoDB's 400 KB).
MAX_BAD_LINES: Final = 500
_MAX_REASON_CHARS: Final = 200
# Fields a line may not set: the batch derives them.
_DERIVED = ("job_id", "batch")
DEFAULT_FIELDS = frozenset(
    {
        "model",
        "priority",
        "metadata",
        "output_prefix",
        "start_timeout",
        "store_io",
        "private_outputs",
        "output_expiry_seconds",
        "delete_payloads",
        "allow_fallbacks",
    }
)


@dataclass(frozen=True)
class GoodLine:
    number: int
    custom_id: str
    request: JobRequest
    message: dict[str, Any]  # the intake job message this line becomes

    @property
    def job_id(self) -> str:
        assert self.request.job_id is not None
        return self.request.job_id


@dataclass(frozen=True)
class BadLine:
    number: int
    custom_id: str | None
    error_type: str
    message: str

    def as_error(self) -> dict[str, Any]:
        return {"type": self.error_type, "message": self.message[:_MAX_REASON_CHARS]}


ParsedLine = GoodLine | BadLine


class LineParser:
    """Turns a manifest's lines into job messages of batch `name` with the batch's defaults."""

    def __init__(
        self, name: str, defaults: dict[str, Any] | None = None, *, budget_usd: float | None = None
    ) -> None:
        self._name = name
        self._defaults = dict(defaults or {})
        self._budget_usd = budget_usd

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self._defaults)

    def take_defaults(self, line: RawLine) -> BadLine | None:
        """Read a first ``{"defaults": {...}}`` line (merged over the message's); a BadLine if it is
        not a valid one."""
        data = json.loads(line.text)
        given = data.get(DEFAULTS_KEY)
        unknown = sorted(set(data) - {DEFAULTS_KEY}) or sorted(set(given or {}) - DEFAULT_FIELDS)
        if not isinstance(given, dict) or unknown:
            return BadLine(
                line.number,
                None,
                "invalid_defaults",
                f'a defaults line is {{"defaults": {{...}}}} of {sorted(DEFAULT_FIELDS)}; not {unknown}',
            )
        self._defaults = {**self._defaults, **given}
        return None

    def parse(self, line: RawLine) -> ParsedLine:
        if len(line.text) > MAX_LINE_BYTES:
            return BadLine(
                line.number, None, "line_too_long", f"a line may take at most {MAX_LINE_BYTES} bytes"
            )
        try:
            data = json.loads(line.text)
        except (UnicodeDecodeError, ValueError) as error:
            return BadLine(line.number, None, "malformed_json", f"the line is not JSON: {error}")
        if not isinstance(data, dict):
            return BadLine(
                line.number, None, "invalid_line", f"a line is a JSON object, not {type(data).__name__}"
            )
        custom_id = data.pop("custom_id", None)
        if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS:
            return BadLine(
                line.number,
                None,
                "invalid_custom_id",
                f"custom_id is required: a string of 1 to {MAX_CUSTOM_ID_CHARS} characters",
            )
        derived = [field for field in _DERIVED if field in data]
        if derived:
            return BadLine(
                line.number, custom_id, "invalid_line", f"{derived} are the batch's to set, not a line's"
            )
        message = {**self._defaults, **data}
        if isinstance(self._defaults.get("metadata"), dict) and isinstance(data.get("metadata"), dict):
            message["metadata"] = {**self._defaults["metadata"], **data["metadata"]}
        batch = JobBatch.model_construct(name=self._name, custom_id=custom_id, line=line.number)
        message["job_id"] = batch.job_id
        message["batch"] = {"name": self._name, "custom_id": custom_id, "line": line.number}
        if self._budget_usd is not None:
            message["batch"]["budget_usd"] = self._budget_usd
        try:
            request = validate_request(message)
        except RequestRejectedError as rejected:
            return BadLine(line.number, custom_id, rejected.error.type, str(rejected))
        return GoodLine(number=line.number, custom_id=custom_id, request=request, message=message)
