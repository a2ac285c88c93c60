"""What the console's page asks for, as JSON-ready values, from the operator commands' own code.

Nothing here writes: the console only reads. Record fields that could carry a credential (a
webhook token, say) are left out, and outputs are reached through short-lived presigned links.
"""

from __future__ import annotations

import mimetypes
import re
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from falflow.jobs import FINAL_STATES, Job, JobState, utcnow
from falflow_tools.ops.dlq import list_dead_letters
from falflow_tools.ops.jobs import job_duration_s, list_jobs, show_job
from falflow_tools.ops.target import Target

# A record field whose name says it may hold a credential never reaches the page.
_SECRET_FIELD = re.compile(r"token|secret|password|credential|api_key", re.IGNORECASE)
LINK_EXPIRY_S = 900
MAX_JOBS = 500
MEDIA_KINDS = ("image", "video", "audio")
_BODY_SHOWN = 2000  # characters of a dead letter's body


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if not _SECRET_FIELD.search(str(k))}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def job_summary(job: Job, now: datetime) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "state": job.state.value,
        "model": job.model,
        "source_kind": job.source_kind,
        "created_at": job.created_at,
        "state_changed_at": job.state_changed_at,
        "duration_s": job_duration_s(job, now),
        "cost": job.cost.amount if job.cost else None,
        "currency": job.cost.currency if job.cost else None,
        "outputs": len(job.outputs),
        "error": job.error.type if job.error else None,
    }


def jobs(
    target: Target, *, state: str | None, model: str | None, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    found = list_jobs(
        target,
        states=[JobState(state)] if state else (),
        model=model or None,
        since=since,
        until=until,
        limit=MAX_JOBS,
    )
    now = utcnow()
    return {"jobs": [job_summary(job, now) for job in found], "limit": MAX_JOBS}


def media_kind(key: str) -> str:
    """image, video, audio or file, from the key's extension (as the browser will play it)."""
    guessed = mimetypes.guess_type(PurePosixPath(key).name)[0] or ""
    kind = guessed.split("/", 1)[0]
    return kind if kind in MEDIA_KINDS else "file"


def job_detail(target: Target, job_id: str) -> dict[str, Any]:
    details = show_job(target, job_id, link_expiry_s=LINK_EXPIRY_S)
    record = details.job.model_dump(mode="json", exclude_none=True)
    outputs = [
        {"key": key, "name": PurePosixPath(key).name, "kind": media_kind(key), "url": url}
        for key, url in details.links.items()
        if key != details.job.result_key
    ]
    result = details.links.get(details.job.result_key or "")
    return {"job": _without_secrets(record), "outputs": outputs, "result_url": result}


def costs(target: Target, *, since: datetime | None) -> dict[str, Any]:
    """Cost of finished jobs per day (UTC) and per model, as the collect function priced them."""
    since = since or utcnow() - timedelta(days=30)
    per_day: dict[str, float] = defaultdict(float)
    per_model: dict[str, float] = defaultdict(float)
    currencies = set()
    uncosted = 0
    for job in list_jobs(target, states=sorted(FINAL_STATES), since=since, limit=10_000):
        if job.cost is None:
            uncosted += 1
            continue
        per_day[job.state_changed_at[:10]] += job.cost.amount
        per_model[job.model or "-"] += job.cost.amount
        currencies.add(job.cost.currency)
    return {
        "per_day": [{"day": day, "amount": round(v, 6)} for day, v in sorted(per_day.items())],
        "per_model": [
            {"model": model, "amount": round(v, 6)}
            for model, v in sorted(per_model.items(), key=lambda item: -item[1])
        ],
        "currency": ", ".join(sorted(currencies)) or "USD",
        "uncosted_jobs": uncosted,
    }


def dead_letters(target: Target) -> dict[str, Any]:
    letters = list_dead_letters(target, (), limit=100)
    return {
        "messages": [
            {**letter.to_json(), "reason": letter.reason, "body": letter.body[:_BODY_SHOWN]}
            for letter in letters
        ]
    }
