"""Object keys in the output bucket, built so that no id or name can leave its prefix.

Layout: ``inbox/<job_id>/<request_id>[.<source>].json`` (fal's raw completions, kept 30 days) and
``outputs/[<output_prefix>/]<job_id>/<file>`` (the copies and ``result.json``).
"""

from __future__ import annotations

from urllib.parse import quote

INBOX_PREFIX = "inbox/"
OUTPUTS_PREFIX = "outputs/"
RESULT_NAME = "result.json"


def key_segment(value: str) -> str:
    """One path segment: anything outside ``[A-Za-z0-9._~-]`` is percent-encoded (so ``/`` cannot
    start a new segment) and the dot segments ``.``/``..`` are encoded too."""
    if not value:
        raise ValueError("an object key segment must not be empty")
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded


def inbox_key(job_id: str, request_id: str, source: str) -> str:
    suffix = "" if source == "webhook" else f".{key_segment(source)}"
    return f"{INBOX_PREFIX}{key_segment(job_id)}/{key_segment(request_id)}{suffix}.json"


def job_output_prefix(job_id: str, output_prefix: str | None = None) -> str:
    """``outputs/[<caller's prefix>/]<job_id>/``; each segment of the caller's prefix is encoded."""
    segments = [key_segment(part) for part in (output_prefix or "").split("/") if part]
    return OUTPUTS_PREFIX + "".join(f"{segment}/" for segment in segments) + f"{key_segment(job_id)}/"


def output_key(prefix: str, name: str) -> str:
    """The key of one output file; ``name`` must already be a safe file name (see ``naming``)."""
    key = prefix + key_segment(name)
    if not key.startswith(prefix) or "/" in key[len(prefix) :]:
        raise ValueError(f"output name {name!r} would leave the job's prefix")
    return key
