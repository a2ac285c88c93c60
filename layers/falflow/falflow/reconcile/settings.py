"""The reconcile function's configuration (env vars of template.yaml's ReconcileFunction), validated
once per cold start by `ReconcileApp.from_environment`: the hand-off, fal, its keys and its own."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field

from falflow.batches.settings import BatchSettings
from falflow.completion.finalise import FinaliserSettings
from falflow.completion.settings import HandoffSettings
from falflow.reconcile.reconciler import ReconcilePolicy
from falflow.settings import FalConnectionSettings, SecretIds
from falflow.spend.settings import RoutedSpendSettings


class ReconcileSettings(
    HandoffSettings, FinaliserSettings, FalConnectionSettings, SecretIds, RoutedSpendSettings, BatchSettings
):
    intake_queue_url: Annotated[str, Field(min_length=1)]
    reconcile_after_minutes: Annotated[float, Field(gt=0)] = 10
    give_up_after_hours: Annotated[float, Field(gt=0)] = 24
    reconcile_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # Stop taking new jobs when less than this is left of the invocation; the next run continues.
    reserve_seconds: Annotated[float, Field(ge=0)] = 20
    # How far back final jobs are looked at for a completion event no publisher sent.
    late_event_lookback_hours: Annotated[float, Field(gt=0)] = 2
    # The DLQs swept each run for messages of jobs that completed since (falflow.reconcile.dead_letters):
    # at most this many messages of each per run, each hidden this long while the sweep looks at it.
    intake_dlq_url: Annotated[str, Field(min_length=1)]
    outputs_dlq_url: Annotated[str, Field(min_length=1)]
    dead_letter_sweep_limit: Annotated[int, Field(ge=0, le=1000)] = 100
    dead_letter_sweep_visibility_seconds: Annotated[int, Field(ge=1, le=900)] = 60
    # The receipts of falflow's own events (falflow.reconcile.receipts), read each run first.
    event_receipts_url: Annotated[str, Field(min_length=1)]
    event_receipts_limit: Annotated[int, Field(ge=1, le=10000)] = 1000

    def policy(self) -> ReconcilePolicy:
        return ReconcilePolicy(
            reconcile_after=timedelta(minutes=self.reconcile_after_minutes),
            give_up_after=timedelta(hours=self.give_up_after_hours),
            concurrency=self.reconcile_concurrency,
            late_event_lookback=timedelta(hours=self.late_event_lookback_hours),
        )
