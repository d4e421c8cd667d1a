"""Prometheus metrics of one operator process, in a registry of its own (no globals).

The per-budget series are the picture of the last sync of the active replica: each
sync replaces the whole picture, so a deleted budget's series go with it, and a
replica that stops leading drops them (only the active replica reports budgets).
Money is kept in integer micro-USD and turned into USD only here, at the edge,
because Prometheus samples are floating point.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from budget_guard.build_info import register_build_info
from budget_guard.domain.budget import BurstPool
from budget_guard.store.usage import BudgetUsage, PoolUsage

MICROS_PER_USD = 1_000_000
SYNC_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class BudgetSample:
    """One LLMBudget or BurstBudget as the last sync saw it. Amounts in micro-USD; None
    where the resource has no such figure (a rejected budget, a per-user template's spend)."""

    namespace: str
    name: str
    kind: str
    scope: str = ""
    period: str = ""
    limit_micros: int | None = None
    spent_micros: int | None = None
    remaining_micros: int | None = None
    resets_at: float | None = None  # Unix time
    conditions: Mapping[str, bool] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [f"{self.namespace}/{self.name}", self.kind]


def _conditions(status: Mapping[str, object]) -> dict[str, bool]:
    listed = status.get("conditions")
    if not isinstance(listed, list):
        return {}
    return {str(cond["type"]): cond.get("status") == "True" for cond in listed}


def budget_sample(
    key: str, status: Mapping[str, object], usage: BudgetUsage | None
) -> BudgetSample:
    """An LLMBudget's figures: from its usage when it is in force, else its conditions only."""
    namespace, name = key.split("/", 1)
    sample = BudgetSample(
        namespace,
        name,
        "LLMBudget",
        scope=str(status.get("scopeSummary", "")),
        conditions=_conditions(status),
    )
    if usage is None:
        return sample
    template = usage.budget.scope.is_user_template
    return replace(
        sample,
        period=usage.budget.period.value,
        limit_micros=usage.effective_limit,
        spent_micros=None if template else usage.spent,
        remaining_micros=None if template else usage.remaining,
        resets_at=usage.window.end.timestamp(),
    )


def pool_sample(
    key: str, status: Mapping[str, object], pool: BurstPool | None, usage: PoolUsage | None
) -> BudgetSample:
    namespace, name = key.split("/", 1)
    sample = BudgetSample(namespace, name, "BurstBudget", conditions=_conditions(status))
    if pool is None:
        return sample
    used = usage.used if usage else 0
    return replace(
        sample,
        scope=pool.budget.id,
        limit_micros=pool.amount_micros,
        spent_micros=used,
        remaining_micros=max(0, pool.amount_micros - used),
    )


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        register_build_info(self.registry, "operator")
        self.reconcile_errors = Counter(
            "budget_guard_reconcile_errors",
            "turns of the operator's loop that failed (and were retried)",
            registry=self.registry,
        )
        self.sync_seconds = Histogram(
            "budget_guard_sync_duration_seconds",
            "time to refresh every status from spend (one sync)",
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )
        self.sync_cpu_seconds = Histogram(
            "budget_guard_sync_cpu_seconds",
            "process CPU time of one sync, reading the resources included",
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )
        self.insight_cpu_seconds = Histogram(
            "budget_guard_insight_refresh_cpu_seconds",
            "process CPU time of one batch of insights (forecasts, reviews, anomalies) "
            "recomputed from the history, within a sync",
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )
        self._budgets: tuple[BudgetSample, ...] = ()
        self.registry.register(_BudgetCollector(lambda: self._budgets))

    def show_budgets(self, samples: Iterable[BudgetSample]) -> None:
        """Replace the per-budget picture with this sync's."""
        self._budgets = tuple(samples)

    def forget_budgets(self) -> None:
        self._budgets = ()

    def serve(self, address: str) -> MetricsServer:
        """Serve ``/metrics`` on ``HOST:PORT`` (port 0: a free one) in a thread of its own."""
        host, _, port = address.rpartition(":")
        server, thread = start_http_server(int(port), host or "0.0.0.0", self.registry)  # noqa: S104
        return MetricsServer(server, thread)


@dataclass(frozen=True)
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# "budget" is namespace/name, as on the webhook's metrics: a "namespace" label would clash
# with the one Prometheus gives every target (the operator pod's namespace).
_LABELS = ["budget", "kind"]


class _BudgetCollector(Collector):
    def __init__(self, samples: Callable[[], tuple[BudgetSample, ...]]) -> None:
        self._samples = samples

    def collect(self) -> Iterator[GaugeMetricFamily]:
        samples = self._samples()
        info = GaugeMetricFamily(
            "budget_guard_budget_info",
            "each budget's scope and period (always 1)",
            labels=[*_LABELS, "scope", "period"],
        )
        for sample in samples:
            info.add_metric([*sample.labels, sample.scope, sample.period], 1)
        yield info
        yield _usd_family(
            "budget_guard_budget_limit_usd",
            "the limit in force this period (times the seasonal multiplier; per user for "
            "per-user templates; a burst pool's amount)",
            samples,
            lambda sample: sample.limit_micros,
        )
        yield _usd_family(
            "budget_guard_budget_spent_usd",
            "settled spend this period (drawn from the pool, for a burst pool)",
            samples,
            lambda sample: sample.spent_micros,
        )
        yield _usd_family(
            "budget_guard_budget_remaining_usd",
            "left for new requests this period",
            samples,
            lambda sample: sample.remaining_micros,
        )
        resets = GaugeMetricFamily(
            "budget_guard_budget_resets_at_timestamp_seconds",
            "when the current period ends, in Unix time",
            labels=_LABELS,
        )
        for sample in samples:
            if sample.resets_at is not None:
                resets.add_metric(sample.labels, sample.resets_at)
        yield resets
        conditions = GaugeMetricFamily(
            "budget_guard_budget_condition",
            "each status condition: 1 when True, 0 when False",
            labels=[*_LABELS, "condition"],
        )
        for sample in samples:
            for condition, true in sorted(sample.conditions.items()):
                conditions.add_metric([*sample.labels, condition], 1 if true else 0)
        yield conditions


def _usd_family(
    name: str,
    documentation: str,
    samples: Iterable[BudgetSample],
    micros: Callable[[BudgetSample], int | None],
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=_LABELS)
    for sample in samples:
        amount = micros(sample)
        if amount is not None:
            family.add_metric(sample.labels, amount / MICROS_PER_USD)
    return family
