"""The spend table: the budget configuration in force, one spend counter per cap and window, and
the mark that fal has locked the account.

    pk                                   what
    config                               BudgetConfig set at run time (``falflow budget set``)
    daily#2026-12-02#all                 ``spent``: reservations and billed costs in the window;
    monthly#2026-12#model:fal-ai/flux    ``alerted``: thresholds (percent) already announced
    fal-account-lock                     fal refused a submit as locked: reason, since, next probe

A counter only ever moves by ``ADD`` in the transaction that records a job's reservation or its
settlement (`falflow.jobs.store.CounterCharge`), so its value is the sum of what the jobs record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.exceptions import ClientError

from falflow.aws.dynamodb import is_condition_failure
from falflow.jobs import isoformat, utcnow
from falflow.spend.caps import BudgetConfig

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CONFIG_KEY: Final = "config"
LOCK_KEY: Final = "fal-account-lock"
DEFAULT_CONFIG_TTL: Final = timedelta(seconds=30)


@dataclass(frozen=True)
class AccountLock:
    """fal answered a submit with "User is locked": since when, why, and the probe in flight."""

    reason: str
    since: str
    probe_at: str
    probe_job_id: str | None = None


@dataclass(frozen=True)
class SpendCounter:
    spent: Decimal
    alerted: frozenset[int]


class SpendLedger(Protocol):
    """What spend control reads and marks besides the job records."""

    table: str

    def config(self) -> BudgetConfig:
        """The caps in force (the run-time configuration if set, else the deploy-time one)."""
        ...

    def counters(self, keys: Sequence[str]) -> dict[str, SpendCounter]: ...

    def mark_alerted(self, key: str, threshold: int) -> bool:
        """Note a threshold of a counter's cap announced; False if it already was."""
        ...

    def lock(self) -> AccountLock | None: ...

    def record_lock(self, reason: str, *, now: datetime, probe_at: datetime) -> None: ...

    def set_probe(self, lock: AccountLock, *, job_id: str, probe_at: datetime) -> bool: ...

    def clear_lock(self, lock: AccountLock) -> bool: ...


class DynamoSpendLedger:
    """`SpendLedger` on the spend table of template.yaml. The configuration is cached per container for
    ``config_ttl`` (a change is seen within it); counters are always read fresh."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        defaults: BudgetConfig,
        config_ttl: timedelta = DEFAULT_CONFIG_TTL,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._client = client
        self.table = table
        self._defaults = defaults
        self._config_ttl = config_ttl
        self._clock = clock
        self._cached: tuple[datetime, BudgetConfig] | None = None

    # ---------------------------------------------------------------------------- configuration

    @property
    def defaults(self) -> BudgetConfig:
        """The deploy-time caps (template parameters and the route table)."""
        return self._defaults

    def config(self) -> BudgetConfig:
        """The caps in force: the run-time configuration if one is set, else the deploy-time one."""
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._config_ttl:
            return self._cached[1]
        config = self.stored_config() or self._defaults
        self._cached = (now, config)
        return config

    def stored_config(self) -> BudgetConfig | None:
        item = self._get(CONFIG_KEY)
        if item is None:
            return None
        return BudgetConfig.model_validate_json(item["config"]["S"])

    def put_config(self, config: BudgetConfig) -> BudgetConfig:
        stamped = config.model_copy(update={"updated_at": isoformat(self._clock())})
        self._client.put_item(
            TableName=self.table,
            Item={"pk": {"S": CONFIG_KEY}, "config": {"S": stamped.model_dump_json()}},
        )
        self._cached = None
        return stamped

    def reset_config(self) -> None:
        """Back to the deploy-time caps."""
        self._client.delete_item(TableName=self.table, Key={"pk": {"S": CONFIG_KEY}})
        self._cached = None

    # ---------------------------------------------------------------------------------- counters

    def spent(self, keys: Sequence[str]) -> dict[str, Decimal]:
        """What each counter holds (0 for one never charged)."""
        return {key: counter.spent for key, counter in self.counters(keys).items()}

    def counters(self, keys: Sequence[str]) -> dict[str, SpendCounter]:
        """Each counter: what it holds and the thresholds announced (nothing for one never charged)."""
        found = dict.fromkeys(keys, SpendCounter(Decimal(0), frozenset()))
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 100):
            request: Any = {self.table: {"Keys": [{"pk": {"S": key}} for key in wanted[start : start + 100]]}}
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    found[item["pk"]["S"]] = SpendCounter(
                        Decimal(item.get("spent", {}).get("N", "0")),
                        frozenset(int(t) for t in item.get("alerted", {}).get("NS", [])),
                    )
                request = response.get("UnprocessedKeys") or None
        return found

    def mark_alerted(self, key: str, threshold: int) -> bool:
        """Note that `threshold` (percent) of the cap counted at `key` was announced; False if it
        already was (so each threshold is announced once per window)."""
        try:
            self._client.update_item(
                TableName=self.table,
                Key={"pk": {"S": key}},
                UpdateExpression="ADD #a :t",
                ConditionExpression="attribute_not_exists(#a) OR NOT contains(#a, :n)",
                ExpressionAttributeNames={"#a": "alerted"},
                ExpressionAttributeValues={":t": {"NS": [str(threshold)]}, ":n": {"N": str(threshold)}},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True

    # ------------------------------------------------------------------------ fal's account lock

    def lock(self) -> AccountLock | None:
        item = self._get(LOCK_KEY)
        if item is None:
            return None
        return AccountLock(**json.loads(item["lock"]["S"]))

    def record_lock(self, reason: str, *, now: datetime, probe_at: datetime) -> None:
        """fal refused a submit as locked; the first to see it sets when the lock is probed next."""
        lock = AccountLock(reason=reason, since=isoformat(now), probe_at=isoformat(probe_at))
        try:
            self._client.put_item(
                TableName=self.table,
                Item={"pk": {"S": LOCK_KEY}, "lock": {"S": json.dumps(lock.__dict__)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise

    def set_probe(self, lock: AccountLock, *, job_id: str, probe_at: datetime) -> bool:
        """Send `job_id` to fal as the probe of the lock; refused if another run changed the lock."""
        probe = replace(lock, probe_at=isoformat(probe_at), probe_job_id=job_id)
        return self._replace_lock(lock, json.dumps(probe.__dict__))

    def clear_lock(self, lock: AccountLock) -> bool:
        """The probe went through: the lock is gone. Refused if the lock changed since it was read."""
        return self._replace_lock(lock, None)

    def _replace_lock(self, lock: AccountLock, new: str | None) -> bool:
        key = {"pk": {"S": LOCK_KEY}}
        names = {"#l": "lock"}
        old = {":old": {"S": json.dumps(lock.__dict__)}}
        try:
            if new is None:
                self._client.delete_item(
                    TableName=self.table,
                    Key=key,
                    ConditionExpression="#l = :old",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=old,
                )
            else:
                self._client.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="SET #l = :new",
                    ConditionExpression="#l = :old",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={**old, ":new": {"S": new}},
                )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True

    def _get(self, key: str) -> dict[str, Any] | None:
        response = self._client.get_item(TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item
