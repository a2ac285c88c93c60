"""The ByStateShard index's key spreads one state's writes over every shard (no hot partition)."""

from __future__ import annotations

from collections import Counter

from falflow.aws.s3 import S3ObjectRef
from falflow.jobs import JobState
from falflow.jobs.store import STATE_SHARDS, state_shard
from falflow.submit.sources import ObjectCreated, message_job_id, object_job_id


def test_one_second_of_jobs_at_1000_per_second_spreads_over_every_shard() -> None:
    # Job ids as the submit path makes them (S3 drops, job messages) and caller-chosen ones.
    ids = [object_job_id(ObjectCreated(S3ObjectRef("in", f"drops/{n:06d}.png", f"v{n}"))) for n in range(400)]
    ids += [message_job_id("", {"model": "fal-ai/flux/dev", "input": {"seed": n}}) for n in range(300)]
    ids += [f"order-{n}" for n in range(300)]
    per_shard = Counter(state_shard(job_id, JobState.SUBMITTED) for job_id in ids)
    assert set(per_shard) == {f"SUBMITTED#{n}" for n in range(STATE_SHARDS)}
    mean = len(ids) / STATE_SHARDS
    # Within 40% of the mean: the busiest shard stays far below one partition's 1,000 writes/s.
    assert max(per_shard.values()) < 1.4 * mean
    assert min(per_shard.values()) > 0.6 * mean


def test_a_job_keeps_its_shard_number_in_every_state() -> None:
    numbers = {state_shard("job-1", state).split("#")[1] for state in JobState}
    assert len(numbers) == 1
    assert state_shard("job-1", JobState.STORING).startswith("STORING#")
