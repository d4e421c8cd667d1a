"""Prometheus metrics of one webhook process, in a registry of its own (no globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

DECISION_BUCKETS = (
    0.0002,
    0.0003,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "budget_guard_decisions",
            "ext_authz decisions by outcome and reason",
            ["decision", "reason"],
            registry=self.registry,
        )
        self._decision_children: dict[tuple[str, str], Counter] = {}
        self.decision_seconds = Histogram(
            "budget_guard_decision_seconds",
            "time to decide one check request, body read to answer",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.spend = Counter(
            "budget_guard_spend_usd",
            "settled spend in USD (label values limited to an allow-list)",
            ["tenant", "feature", "model"],
            registry=self.registry,
        )
        self.utilization = Gauge(
            "budget_guard_budget_utilization_ratio",
            "used / effective limit of each budget in its current period, as last seen",
            ["budget"],
            registry=self.registry,
        )
        self.ledger_errors = Counter(
            "budget_guard_ledger_errors",
            "ledger calls that failed or timed out",
            ["operation"],
            registry=self.registry,
        )
        self.fail_open = Counter(
            "budget_guard_fail_open",
            "requests allowed because the ledger was unavailable and every budget fails open",
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "budget_guard_config_reloads",
            "configurations put in force",
            registry=self.registry,
        )

    def count_decision(self, decision: str, reason: str, seconds: float) -> None:
        """One decision: its outcome and how long it took (children cached: hot path)."""
        child = self._decision_children.get((decision, reason))
        if child is None:
            child = self.decisions.labels(decision, reason)
            self._decision_children[(decision, reason)] = child
        child.inc()
        self.decision_seconds.observe(seconds)

    def count_decision_paths(self, paths: Callable[[], dict[str, int]]) -> None:
        """Expose, at each scrape, how many decisions took which path."""
        self.registry.register(
            _CountersOf(
                "budget_guard_decision_paths",
                "decisions made in process from leases (local) or with a Redis round trip (ledger)",
                "path",
                paths,
            )
        )

    def count_shed(self, shed: Callable[[], dict[str, int]]) -> None:
        """Expose the checks turned away under overload, by rule (see webhook.admission)."""
        self.registry.register(
            _CountersOf(
                "budget_guard_overload_shed",
                "checks answered 429 overloaded: too many in flight (inflight) or too late "
                "to ask the ledger before the gateway's timeout (deadline)",
                "reason",
                shed,
            )
        )

    def watch_ledger_channel(self, counts: Callable[[], dict[str, int]]) -> None:
        """Expose the decision path's pipelined Redis connection (see store.channel)."""
        self.registry.register(
            _CountersOf(
                "budget_guard_ledger_channel",
                "the decision path's Redis connection: commands sent, writes (batches), "
                "stalls (no reply within --ledger-timeout-ms) and outages",
                "event",
                counts,
            )
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _CountersOf(Collector):
    """Counters kept elsewhere (plain ints on the hot path), read at each scrape."""

    def __init__(
        self, name: str, documentation: str, label: str, values: Callable[[], dict[str, int]]
    ) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._values = values

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in self._values().items():
            family.add_metric([value], count)
        yield family
