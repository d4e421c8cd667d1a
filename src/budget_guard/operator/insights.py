"""What the history says of each budget: the review figures, the end-of-period forecast,
committed use and anomalies, refreshed from the ledger's daily and hourly history at most
every ``--insight-interval-seconds``, and said once each as a Warning Event and an alert.

The status sync writes them into the status (``status.review``, ``status.forecast``,
``status.commitment`` and the ``ForecastExceedsLimit`` and ``AnomalyDetected``
conditions; see ``operator.status``) and then lets ``announce`` tell people: a forecast
past the limit once per period, an anomaly once per episode (the condition's transition
time), an unused commitment once per period.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from budget_guard.domain.budget import Budget
from budget_guard.domain.review import review_of
from budget_guard.operator.compile import Manifest
from budget_guard.operator.conditions import (
    ANOMALY_DETECTED,
    EVENT_ANOMALY,
    EVENT_COMMITMENT_UNUSED,
    EVENT_FORECAST_EXCEEDS_LIMIT,
    FORECAST_EXCEEDS_LIMIT,
)
from budget_guard.operator.events import Announcement, Announcer
from budget_guard.operator.status import Insight
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.history import DailySpend, read_review_history
from budget_guard.store.keys import KeySchema
from budget_guard.store.usage import BudgetUsage

log = logging.getLogger(__name__)

# Recomputing one budget's insight reads and walks its history: some 2.5 ms of CPU
# here, so 25 s for 10,000 budgets. Due budgets are taken a batch at a time, and when
# more remain after a batch, the next waits long enough to keep this work under a share
# of a core: with many budgets the interval stretches rather than the CPU.
INSIGHT_BATCH = 200
INSIGHT_CPU_SHARE = 0.1


class Insights:
    def __init__(
        self,
        redis: Redis,
        keys: KeySchema,
        announcer: Announcer,
        interval_seconds: float = 60.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._announcer = announcer
        self._interval = interval_seconds
        self._daily = DailySpend(redis, keys, keep_settled=True)
        self._current: dict[str, Insight] = {}
        self._refreshed: dict[str, float] = {}  # budget id: when its insight was computed
        self._next_refresh = 0.0

    def get(self, budget_id: str) -> Insight | None:
        return self._current.get(budget_id)

    async def refresh(
        self, budgets: Sequence[Budget], usages: Mapping[str, BudgetUsage], now: dt.datetime
    ) -> bool:
        """Recompute the insights that are due (none yet, or older than the interval), a
        batch at a time; True if any was. A ledger that cannot be read leaves the last
        insights in place."""
        started = time.monotonic()
        if started < self._next_refresh:
            return False
        stale = started - self._interval
        due = [
            budget
            for budget in budgets
            if budget.id in usages and self._refreshed.get(budget.id, -1.0) <= stale
        ]
        due.sort(key=lambda budget: self._refreshed.get(budget.id, -1.0))  # oldest first
        batch = due[:INSIGHT_BATCH]
        if not batch:
            return False
        cpu_started = time.process_time()
        try:
            histories = await read_review_history(self._redis, self._keys, batch, now, self._daily)
        except LedgerUnavailable as error:
            log.warning("budget insights not refreshed: %s", error)
            return False
        for budget, (days, hours) in zip(batch, histories, strict=True):
            review, anomaly = review_of(budget, usages[budget.id], days, hours, now)
            self._current[budget.id] = Insight(review, anomaly)
            self._refreshed[budget.id] = started
        self._forget_all_but(budgets)
        if len(due) > len(batch):
            spent = time.process_time() - cpu_started
            self._next_refresh = time.monotonic() + spent / INSIGHT_CPU_SHARE
        return True

    def _forget_all_but(self, budgets: Sequence[Budget]) -> None:
        live = {budget.id for budget in budgets}
        self._current = {k: v for k, v in self._current.items() if k in live}
        self._refreshed = {k: v for k, v in self._refreshed.items() if k in live}
        self._daily.forget(live)

    async def announce(self, manifest: Manifest, status: Mapping[str, Any]) -> None:
        """A Warning Event and an alert for what ``status`` newly says, each once."""
        metadata = manifest.get("metadata", {})
        uid = metadata.get("uid") or f"{metadata.get('namespace')}/{metadata.get('name')}"
        period = str(status.get("periodKey", ""))
        conditions = {str(c["type"]): c for c in status.get("conditions", [])}
        forecast = conditions.get(FORECAST_EXCEEDS_LIMIT)
        if forecast is not None and forecast["status"] == "True":
            details = {"period": period, **dict(status.get("forecast", {}))}
            await self._say(
                manifest,
                f"{uid}:forecast:{period}",
                EVENT_FORECAST_EXCEEDS_LIMIT,
                str(forecast["message"]),
                details,
            )
        anomaly = conditions.get(ANOMALY_DETECTED)
        if anomaly is not None and anomaly["status"] == "True":
            await self._say(
                manifest,
                f"{uid}:anomaly:{anomaly['lastTransitionTime']}",
                EVENT_ANOMALY,
                str(anomaly["message"]),
                {"period": period},
            )
        commitment = status.get("commitment") or {}
        unused = commitment.get("projectedUnused")
        if unused is not None and unused != "0.00":
            await self._say(
                manifest,
                f"{uid}:commitment:{period}",
                EVENT_COMMITMENT_UNUSED,
                f"the forecast leaves ${unused} of the ${commitment['amount']} commitment "
                f"unused this period ({commitment['summary']})",
                {"period": period, "projectedUnusedUsd": unused},
            )

    async def _say(
        self,
        manifest: Manifest,
        marker: str,
        reason: str,
        message: str,
        details: Mapping[str, Any],
    ) -> None:
        await self._announcer.say(
            Announcement(manifest, "Warning", reason, message, marker), details
        )
