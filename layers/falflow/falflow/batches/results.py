"""A batch's answer: ``results.jsonl`` (one line per manifest line, in its order), ``errors.jsonl``
(the lines that did not complete) and ``manifest.json`` (counts, cost, times, the input's version),
written to the output bucket once every line is final, then one ``Batch Completed`` event.

The results are not kept as the jobs run: they are read back from the manifest (its pinned version)
and the jobs its lines derive, a page at a time, so the same reading gives partial results of a
running batch (``falflow batch results NAME --partial``) and memory stays flat for any size.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any, Final, Protocol

from aws_lambda_powertools import Logger

from falflow.aws.s3 import S3ObjectRef
from falflow.batches.lines import RawLine, is_defaults, line_names, read_lines
from falflow.batches.model import Batch, BatchState
from falflow.batches.objects import ManifestObjects
from falflow.batches.store import DynamoBatchStore
from falflow.jobs.batch import batch_job_id
from falflow.jobs.model import Job, JobState, isoformat, utcnow
from falflow.jobs.store import JobStore

logger = Logger(child=True)

COMPLETED_EVENT: Final = "Batch Completed"
INVALID: Final = "INVALID"  # a line that is no job
NOT_SENT: Final = "NOT_SENT"  # a line the cancelled batch never sent
PENDING: Final = "PENDING"  # a line whose job is not recorded yet
_PAGE: Final = 100
_SPOOL_BYTES: Final = 8 * 1024 * 1024  # kept in memory up to this, then on /tmp


class ResultObjects(Protocol):
    def put(self, key: str, body: IO[bytes], content_type: str) -> None: ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None: ...


def result_row(
    number: int,
    custom_id: str | None,
    model: str | None,
    job_id: str | None,
    job: Job | None,
    *,
    missing: str,
) -> dict[str, Any]:
    """One line of results.jsonl for a line that is a job (`job` None: not recorded yet)."""
    row: dict[str, Any] = {
        "line": number,
        "custom_id": custom_id,
        "job_id": job_id,
        "model": job.model if job else model,
        "state": job.state.value if job else missing,
    }
    if job is not None:
        cost = job.cost or job.estimate
        row["outputs"] = job.outputs
        row["cost_usd"] = cost.amount if cost else None
        row["cost_source"] = job.cost_source
        row["error"] = job.error.model_dump(exclude_none=True) if job.error else None
        row["finished_at"] = job.state_changed_at if job.is_final else None
    return row


def invalid_row(invalid: dict[str, Any]) -> dict[str, Any]:
    """One line of results.jsonl for a line that is no job, with its reason."""
    return {
        "line": invalid["line"],
        "custom_id": invalid.get("custom_id"),
        "job_id": None,
        "state": INVALID,
        "error": {"type": invalid["type"], "message": invalid["message"]},
    }


class BatchResults:
    def __init__(
        self,
        store: DynamoBatchStore,
        jobs: JobStore,
        manifests: ManifestObjects,
        outputs: ResultObjects,
        *,
        events: EventPublisher | None = None,
        output_bucket: str = "",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._manifests = manifests
        self._outputs = outputs
        self._events = events
        self._output_bucket = output_bucket
        self._clock = clock

    def rows(self, batch: Batch) -> Iterator[dict[str, Any]]:
        """Every line's result as it stands, in the manifest's order."""
        invalid = {int(row["line"]): row for row in batch.invalid}
        missing = NOT_SENT if batch.unsent and batch.fan_out_done else PENDING
        page: list[RawLine] = []
        stream = self._manifests.read(S3ObjectRef.parse(batch.source))
        for index, line in enumerate(read_lines(stream)):
            if index == 0 and is_defaults(line):
                continue
            page.append(line)
            if len(page) == _PAGE:
                yield from self._page(batch, page, invalid, missing)
                page = []
        yield from self._page(batch, page, invalid, missing)

    def _page(
        self, batch: Batch, page: Sequence[RawLine], invalid: dict[int, dict[str, Any]], missing: str
    ) -> Iterator[dict[str, Any]]:
        named = [(line.number, *line_names(line, batch.defaults)) for line in page]
        ids = {
            number: batch_job_id(batch.name, custom_id)
            for number, custom_id, _ in named
            if custom_id is not None and number not in invalid
        }
        found = self._jobs.get_many(list(ids.values())) if ids else {}
        for number, custom_id, model in named:
            if number in invalid:
                yield invalid_row(invalid[number])
            else:
                job_id = ids.get(number)
                yield result_row(number, custom_id, model, job_id, found.get(job_id or ""), missing=missing)

    # --------------------------------------------------------------------------- the answer

    def write(self, batch: Batch) -> dict[str, str]:
        """Write the batch's three files; their keys."""
        keys = {
            "results": f"{batch.output_prefix}/results.jsonl",
            "errors": f"{batch.output_prefix}/errors.jsonl",
            "manifest": f"{batch.output_prefix}/manifest.json",
        }
        summary = _Summary()
        with (
            tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as results,
            tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as errors,
        ):
            for row in self.rows(batch):
                summary.add(row)
                text = (json.dumps(row, separators=(",", ":"), default=str) + "\n").encode()
                results.write(text)
                if row["state"] != JobState.COMPLETED.value:
                    errors.write(text)
            for body, key in ((results, keys["results"]), (errors, keys["errors"])):
                body.seek(0)
                self._outputs.put(key, body, "application/jsonl")
        manifest = summary.manifest(
            batch, keys, finished_at=isoformat(self._clock()), bucket=self._output_bucket
        )
        with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as body:
            body.write(json.dumps(manifest, indent=2).encode())
            body.seek(0)
            self._outputs.put(keys["manifest"], body, "application/json")
        return keys

    def finish_ready(self) -> dict[str, int]:
        """Answer every batch whose lines are all final; announce every answered one not announced
        yet (a run that died after writing is finished by the next). What it did, counted."""
        done: Counter[str] = Counter()
        for listed in self._store.list_batches():
            batch = listed
            if not batch.is_final and batch.all_final:
                keys = self.write(batch)
                finished = self._store.finish(batch.name, seen=batch, now=self._clock(), outputs=keys)
                done["batches_finished" if finished else "batches_finish_raced"] += 1
                batch = finished or batch
            if self._events is not None and batch.is_final and batch.event_published_at is None:
                self._announce(batch, self._events)  # REJECTED ones too
                done["batches_announced"] += 1
        return dict(done)

    def _announce(self, batch: Batch, events: EventPublisher) -> None:
        events.publish(
            COMPLETED_EVENT,
            {
                "batch": batch.name,
                "state": batch.state.value,
                "source": batch.source,
                "lines": batch.lines,
                "invalid": batch.bad,
                "not_sent": batch.unsent,
                "jobs": batch.tally,
                "cost_usd": batch.cost_usd,  # as recorded so far: fal may bill a line later
                "error": batch.error,
                "bucket": self._output_bucket,
                **batch.outputs,
                "finished_at": batch.finished_at,
            },
        )
        self._store.mark_event_published(batch.name, now=self._clock())
        logger.info("batch completed", batch=batch.name, state=batch.state.value)


class _Summary:
    """What manifest.json counts, gathered as the result rows go by."""

    def __init__(self) -> None:
        self.states: Counter[str] = Counter()
        self.cost_by_model: defaultdict[str, float] = defaultdict(float)
        self.lines = 0

    def add(self, row: dict[str, Any]) -> None:
        self.lines += 1
        self.states[row["state"]] += 1
        if row.get("cost_usd") is not None:
            self.cost_by_model[row["model"]] += float(row["cost_usd"])

    def manifest(
        self, batch: Batch, keys: dict[str, str], *, finished_at: str, bucket: str
    ) -> dict[str, Any]:
        source = S3ObjectRef.parse(batch.source)
        return {
            "batch": batch.name,
            "state": (
                BatchState.CANCELLED if batch.state is BatchState.CANCELLING else BatchState.COMPLETED
            ).value,
            "input": {
                "bucket": source.bucket,
                "key": source.key,
                "version_id": source.version_id,
                "etag": batch.etag,
            },
            "lines": self.lines,
            "counts": dict(sorted(self.states.items())),
            "cost_usd": {
                "total": round(sum(self.cost_by_model.values()), 6),
                "by_model": {model: round(cost, 6) for model, cost in sorted(self.cost_by_model.items())},
                "estimate_at_start": batch.estimate_usd,
            },
            "times": {
                "created_at": batch.created_at,
                "fanned_out_at": batch.fanned_out_at,
                "cancel_requested_at": batch.cancel_requested_at,
                "finished_at": finished_at,
            },
            "outputs": {"bucket": bucket, **keys},
        }
