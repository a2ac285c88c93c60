"""The local stack's short visibility timeouts, with the template's ratios kept.

Locally a failed message should come back in seconds, not the template's minutes. Shortening only
the visibility timeout breaks what the template relies on: a store lease (960 s) that outlives the
store function (900 s) and expires before the outputs queue (5,400 s) redelivers, so a redelivery
after a killed run finds the lease expired and takes the job over. With a 30 s visibility and the
960 s lease, the redelivery found a live lease and was dropped. So every duration is scaled
together: the queues by one factor (the shortest becomes the configured visibility), and a function
with a lease setting gets its timeout and lease scaled from its queue's, in the template's ratios.
The submit's lease (`SUBMIT_LEASE_SECONDS`: 120 s, its 60 s timeout, the intake's 360 s visibility)
is scaled the same way, so a killed submit's job is free again about when its message comes back,
not two minutes later. A function without a lease setting keeps its template timeout.

No scaled timeout is shorter than `MIN_LOCAL_TIMEOUT_S`: at the e2e's 2 s intake visibility the
submit's would be 0.33 s, and a batch of ten against moto and the emulator on a loaded 2-core
machine takes seconds (a 200-job reliability run with a 5 s floor timed out hundreds of submit
runs, and their messages ended in the DLQ), so the machine, not the code, would time it out.
Where the floor applies, the lease is raised with the timeout (a live worker must never outlive its
lease: that guards against a second fal submission), and the queue's visibility with them, so the
template's order holds: timeout < lease < visibility. Lambda refuses an SQS event source whose
queue's visibility timeout is shorter than the function's timeout, because a message would come
back while its first run still works on it (with a 4 s intake visibility under the 20 s floor, a
300-job run with kills saw runs longer than 4 s lose their messages' receives to other workers,
and 21 messages of jobs that completed ended in the intake DLQ). And a message redelivered after its
worker was killed should find that worker's lease over and take the job, as in the template. Messages
the code sends back on purpose (a lease held, the grace after a lost reply) come back when due, not
after the visibility timeout (docs/adr/0004-a-lease-holds-a-job-for-one-worker.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from falflow.store.settings import StoreSettings
from falflow.submit.settings import SubmitSettings
from falflow_tools.template import function_specs, resources_of_type

# Functions whose lease is a setting: (environment variable, its default when the template sets none).
LEASE_SETTINGS: Mapping[str, tuple[str, float]] = {
    "SubmitFunction": (
        "SUBMIT_LEASE_SECONDS",
        float(SubmitSettings.model_fields["submit_lease_seconds"].default),
    ),
    "StoreFunction": (
        "STORE_LEASE_SECONDS",
        float(StoreSettings.model_fields["store_lease_seconds"].default),
    ),
}


# Functions whose retry backoff is a setting, scaled like the queues' visibility (the floor below is
# about how long a run may take, not how soon a retry comes).
BACKOFF_SETTINGS: Mapping[str, tuple[str, float]] = {
    "SubmitFunction": (
        "SUBMIT_RETRY_BASE_SECONDS",
        float(SubmitSettings.model_fields["submit_retry_base_seconds"].default),
    ),
}


# Shortest local timeout a leased function gets: what a batch against moto can take under load.
MIN_LOCAL_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class QueueConsumer:
    """One SQS event source as the template declares it."""

    function: str
    queue: str
    visibility_s: int
    timeout_s: float
    environment: Mapping[str, str]

    @property
    def lease(self) -> tuple[str, float] | None:
        """The lease setting's name and template value, if the function has one."""
        setting = LEASE_SETTINGS.get(self.function)
        if setting is None:
            return None
        name, default = setting
        return name, float(self.environment.get(name, default))


def template_consumers(template: Mapping[str, Any]) -> list[QueueConsumer]:
    """Every function an SQS queue of `template` drives, with the template's durations."""
    queues = resources_of_type(template, "AWS::SQS::Queue")
    consumers = []
    for logical, spec in function_specs(template).items():
        for event in spec.events.values():
            if event.get("Type") != "SQS":
                continue
            queue = event["Properties"]["Queue"]["Fn::GetAtt"][0]
            consumers.append(
                QueueConsumer(
                    function=logical,
                    queue=queue,
                    visibility_s=int(queues[queue]["Properties"].get("VisibilityTimeout", 30)),
                    timeout_s=float(spec.timeout),
                    environment={
                        k: str(v) for k, v in spec.environment.items() if isinstance(v, (str, int, float))
                    },
                )
            )
    return consumers


@dataclass(frozen=True)
class LocalTiming:
    visibility_s: int
    timeout_s: float
    environment: Mapping[str, str]


def scaled_timings(consumers: Iterable[QueueConsumer], shortest_visibility_s: int) -> dict[str, LocalTiming]:
    """Each consumer's local visibility, timeout, lease and retry backoff settings, by function."""
    consumers = list(consumers)
    if not consumers:
        return {}
    scale = shortest_visibility_s / min(c.visibility_s for c in consumers)
    timings = {}
    for consumer in consumers:
        visibility = max(1, round(consumer.visibility_s * scale))
        environment = {}
        if consumer.function in BACKOFF_SETTINGS:
            name, default = BACKOFF_SETTINGS[consumer.function]
            backoff = float(consumer.environment.get(name, default))
            environment[name] = f"{backoff * visibility / consumer.visibility_s:.3f}"
        lease = consumer.lease
        if lease is None:
            timings[consumer.function] = LocalTiming(visibility, consumer.timeout_s, environment)
            continue
        # From the rounded visibility SQS will use, so the ratios hold exactly (above the floor).
        floor = min(1.0, MIN_LOCAL_TIMEOUT_S / consumer.timeout_s)  # never above the template's
        ratio = max(visibility / consumer.visibility_s, floor)
        name, seconds = lease
        local_lease = seconds * ratio
        environment[name] = f"{local_lease:.3f}"
        timings[consumer.function] = LocalTiming(
            max(visibility, math.floor(local_lease) + 1), consumer.timeout_s * ratio, environment
        )
    return timings


# Margin of the receipt window over the longest gap between two reads of the receipts (the
# receipt's own delivery through EventBridge and SQS, a run that starts late): the template's 900 s
# is 1.5 times (its 5-minute rate + the reconcile function's 300 s timeout).
RECEIPT_WINDOW_MARGIN = 1.5


def receipt_window_s(reconcile_interval_s: float, reconcile_timeout_s: float) -> float:
    """How long a publisher's claim on a completion event must last: until a reconcile run has
    read the event's receipt. Receipts are read as each run starts and runs follow each other, so a
    receipt that arrives just after a read waits for the run (at most its timeout) and the interval
    (docs/adr/0029-a-completion-event-is-published-once-and-confirmed-by-its-receipt.md)."""
    return RECEIPT_WINDOW_MARGIN * (reconcile_interval_s + reconcile_timeout_s)
