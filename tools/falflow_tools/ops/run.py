"""`falflow run`: one synchronous call on fal's sync host (``fal.run``) to try a model before files
are routed to it; its output files are saved to a local folder (docs/fal-contract.md §2)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from falflow.fal import FalError, FalPlatformClient, FalQueueClient
from falflow.store.discovery import find_output_files, output_names
from falflow.store.media import (
    DEFAULT_MEDIA_HOSTS,
    SIGNED_URL_SECONDS,
    MediaFetcher,
    MediaPolicy,
    MediaTransientError,
    OutputRefusedError,
    OutputTooLargeError,
    OutputUnavailableError,
    redact,
)
from falflow_tools.ops.target import OpsError, Target

DOWNLOAD_CHUNK_BYTES = 256 * 2**10
RESULT_FILE = "result.json"
MAX_FILE_BYTES = 5 * 2**30


@dataclass(frozen=True)
class RunResult:
    output: dict[str, Any]
    served_from: str | None
    folder: Path
    files: list[Path]


def run_model(
    target: Target,
    model: str,
    model_input: dict[str, Any],
    *,
    folder: Path,
    allow_fallbacks: bool = False,
    media: MediaFetcher | None = None,
) -> RunResult:
    """Run ``model`` once and save its output files (and ``result.json``) under ``folder``.

    Files come through the same download policy as the store's (fal's hosts only; the local
    stack's emulator is trusted like the store trusts it)."""
    queue = FalQueueClient(target.fal, target.fal_api_key)
    platform = FalPlatformClient(target.fal, target.fal_api_key)
    try:
        output, served_from = queue.run(model, model_input, allow_fallbacks=allow_fallbacks)
    except FalError as error:
        raise OpsError(f"fal did not run {model}: {error}") from error
    fetcher = media or MediaFetcher(
        MediaPolicy.build(DEFAULT_MEDIA_HOSTS, _local_origins(target), max_bytes=MAX_FILE_BYTES),
        signer=lambda url: platform.sign_file_url(url, expiration_seconds=SIGNED_URL_SECONDS),
    )
    folder.mkdir(parents=True, exist_ok=True)
    # Inline (data:) outputs stay in result.json; files on fal's hosts are downloaded.
    files = [f for f in find_output_files(output) if not f.url.startswith("data:")]
    saved = []
    for found, name in zip(files, output_names(files), strict=True):
        path = folder / name
        try:
            with fetcher.open(found.url) as response, path.open("wb") as sink:
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    sink.write(chunk)
        except OutputRefusedError as refused:
            raise OpsError(f"not downloading {redact(found.url)}: {refused.reason}") from None
        except (OutputUnavailableError, OutputTooLargeError, MediaTransientError, OSError) as error:
            raise OpsError(f"cannot download {redact(found.url)}: {error}") from None
        saved.append(path)
    result = {"model": model, "served_from": served_from, "output": output}
    (folder / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return RunResult(output=output, served_from=served_from, folder=folder, files=saved)


def _local_origins(target: Target) -> list[str]:
    """The local stack's emulator CDN origin (the store's MEDIA_ALLOW_LOCAL); none when deployed."""
    if target.endpoint_url is None:
        return []
    cdn = httpx.URL(target.fal.cdn_url)
    return [f"{cdn.scheme}://{cdn.netloc.decode('ascii')}"] if cdn.scheme == "http" else []
