"""What falflow has spent: fal's usage as the collect function stored it, and the cost of each job."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from falflow.collect.model import RunRecord, UsageRow
from falflow.collect.usage_table import USAGE_PK_PREFIX, DynamoUsageTable
from falflow.jobs import Job, JobState, isoformat, utcnow
from falflow.jobs.store import from_dynamo
from falflow_tools.ops.target import Target

_deserializer = TypeDeserializer()
# Jobs that may carry a cost: fal ran (or was asked to run) them.
COSTED_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclass
class UsageLine:
    endpoint_id: str
    unit: str
    quantity: float = 0.0
    cost: float | None = None
    currency: str | None = None


@dataclass
class UsageSummary:
    since: datetime
    until: datetime
    lines: list[UsageLine]
    last_run: RunRecord | None

    def to_json(self) -> dict[str, Any]:
        return {
            "since": isoformat(self.since),
            "until": isoformat(self.until),
            "lines": [line.__dict__ for line in self.lines],
            "last_collect_run": self.last_run.model_dump(mode="json") if self.last_run else None,
        }


def _days(since: datetime, until: datetime) -> Iterator[date]:
    day = since.date()
    while day <= until.date():
        yield day
        day += timedelta(days=1)


def _usage_rows(target: Target, day: date) -> Iterator[UsageRow]:
    client = target.dynamodb()
    kwargs: dict[str, Any] = {
        "TableName": target.output("UsageTableName"),
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"{USAGE_PK_PREFIX}{day.isoformat()}"}},
    }
    while True:
        page = client.query(**kwargs)
        for item in page.get("Items", []):
            fields = {k: v for k, v in item.items() if k not in ("pk", "sk")}
            yield UsageRow.model_validate(
                {k: from_dynamo(_deserializer.deserialize(v)) for k, v in fields.items()}
            )
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def usage(
    target: Target, *, since: datetime, until: datetime | None = None, model: str | None = None
) -> UsageSummary:
    """fal's hourly usage lines in [since, until), summed per endpoint and unit."""
    until = until or utcnow()
    lines: dict[tuple[str, str], UsageLine] = {}
    for day in _days(since, until):
        for row in _usage_rows(target, day):
            bucket = datetime.fromisoformat(row.bucket)
            if not since <= bucket < until or (model and row.endpoint_id != model):
                continue
            line = lines.setdefault((row.endpoint_id, row.unit), UsageLine(row.endpoint_id, row.unit))
            line.quantity += row.quantity
            if row.cost_total is not None:
                line.cost = (line.cost or 0.0) + row.cost_total
                line.currency = row.currency or line.currency
    last_run = DynamoUsageTable(target.dynamodb(), target.output("UsageTableName")).latest_run()
    return UsageSummary(
        since, until, sorted(lines.values(), key=lambda line: (line.endpoint_id, line.unit)), last_run
    )


@dataclass
class CostLine:
    model: str
    jobs: int = 0
    costed: int = 0
    amount: float = 0.0
    currency: str = "USD"
    sources: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "sources": dict(self.sources)}


def _finished_jobs(
    target: Target, *, since: datetime, until: datetime | None, model: str | None
) -> Iterator[tuple[str, Job]]:
    """Jobs that finished in [since, until) in a state fal may bill for, with their model's name."""
    store = target.job_store()
    for state in COSTED_STATES:
        for job in store.list_by_state(state, changed_after=since, changed_before=until):
            name = job.model or "(no model)"
            if not model or name == model:
                yield name, job


def costs(
    target: Target, *, since: datetime, until: datetime | None = None, model: str | None = None
) -> list[CostLine]:
    """The cost of jobs that finished in [since, until), per model (from the collected job costs)."""
    lines: dict[str, CostLine] = {}
    for name, job in _finished_jobs(target, since=since, until=until, model=model):
        line = lines.setdefault(name, CostLine(name))
        line.jobs += 1
        if job.cost is not None:
            line.costed += 1
            line.amount += job.cost.amount
            line.currency = job.cost.currency
            line.sources[job.cost.source] += 1
    return sorted(lines.values(), key=lambda line: -line.amount)


@dataclass
class VarianceLine:
    """How a model's submit-time estimates compare with what fal billed for the same jobs."""

    model: str
    compared: int = 0  # jobs with both an estimate and a billed cost
    estimated: float = 0.0
    billed: float = 0.0
    estimate_only: int = 0  # jobs with an estimate and no billed cost (yet)

    @property
    def difference(self) -> float:
        return self.billed - self.estimated

    @property
    def ratio(self) -> float | None:
        """Billed per estimated dollar: 1 is exact, above 1 the estimates are low."""
        return self.billed / self.estimated if self.estimated else None

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "difference": self.difference, "ratio": self.ratio}


def cost_variance(
    target: Target, *, since: datetime, until: datetime | None = None, model: str | None = None
) -> list[VarianceLine]:
    """Per model, the estimates of jobs that finished in [since, until) against their billed costs."""
    lines: dict[str, VarianceLine] = {}
    for name, job in _finished_jobs(target, since=since, until=until, model=model):
        if job.estimate is None:
            continue
        line = lines.setdefault(name, VarianceLine(name))
        if job.cost is not None and job.cost_source == "billed":
            line.compared += 1
            line.estimated += job.estimate.amount
            line.billed += job.cost.amount
        else:
            line.estimate_only += 1
    return sorted(lines.values(), key=lambda line: (-line.billed, line.model))
