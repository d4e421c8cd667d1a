"""Prometheus metrics of one webhook process, in a registry of its own (no globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from budget_guard.build_info import register_build_info

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


@dataclass(frozen=True)
class WebhookState:
    """What a scrape reports of the process's own state (read at each scrape)."""

    config_loaded: bool
    config_error: bool  # the last load failed; the previous configuration stays in force
    journal_entries: int  # fail-open decisions waiting to be recorded in the ledger
    journal_dropped: int  # ... and those lost because the journal was full
    open_leases: int
    queued_local_decisions: int
    tokenizer_fallbacks: Mapping[str, str]  # encoding -> why it could not be loaded


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        register_build_info(self.registry, "webhook")
        self.ledger_up = Gauge(
            "budget_guard_ledger_up",
            "1 when the ledger (Redis) answered the last probe (at each scrape and /readyz)",
            registry=self.registry,
        )
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

        self.settlements = Counter(
            "budget_guard_settlements",
            "settlements by who reported them (ext_proc: the gateway, api: POST /v1/usage, "
            "sweeper: nobody before the deadline) and outcome (settled, already_settled, "
            "unknown_request_id, accepted, lost, ledger_unavailable)",
            ["source", "status"],
            registry=self.registry,
        )
        self.usage_below_estimate = Counter(
            "budget_guard_usage_below_estimate",
            "usage reports (POST /v1/usage) far below the prompt the guard counted at the "
            "check, by tenant: settled as reported, and logged (see docs/webhook.md)",
            ["tenant"],
            registry=self.registry,
        )
        self.streams_ended_early = Counter(
            "budget_guard_ext_proc_streams_ended_early",
            "calls whose answer ended before it was complete (client gone, upstream reset), "
            "settled from what was seen",
            ["shape"],
            registry=self.registry,
        )
        self.usage_parse_failures = Counter(
            "budget_guard_usage_parse_failures",
            "answers read by ext_proc in which some usage, event or document could not be "
            "read, by the provider's answer shape",
            ["shape"],
            registry=self.registry,
        )
        self.ext_proc_stream_seconds = Histogram(
            "budget_guard_ext_proc_stream_seconds",
            "how long an ext_proc stream of a priced call lasted, request headers to its end",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )

    def count_settlement(self, source: str, status: str) -> None:
        self.settlements.labels(source, status).inc()

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

    def watch_state(self, state: Callable[[], WebhookState]) -> None:
        """Expose, at each scrape, the configuration, journal, leases and tokenizers."""
        self.registry.register(_StateCollector(state))

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


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], WebhookState]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        yield _gauge(
            "budget_guard_config_loaded",
            "1 when a budget configuration is in force (the readiness condition)",
            int(state.config_loaded),
        )
        yield _gauge(
            "budget_guard_config_error",
            "1 when the last configuration could not be loaded (the previous one stays in force)",
            int(state.config_error),
        )
        yield _gauge(
            "budget_guard_fail_open_journal_entries",
            "requests allowed while the ledger was unavailable, not recorded in it yet",
            state.journal_entries,
        )
        yield CounterMetricFamily(
            "budget_guard_fail_open_journal_dropped",
            "fail-open requests whose spend was lost because the journal was full",
            value=state.journal_dropped,
        )
        yield _gauge("budget_guard_open_leases", "leases this process holds", state.open_leases)
        yield _gauge(
            "budget_guard_queued_local_decisions",
            "decisions made from leases, waiting to be committed to the ledger",
            state.queued_local_decisions,
        )
        fallbacks = GaugeMetricFamily(
            "budget_guard_tokenizer_fallback",
            "1 for each tiktoken encoding that could not be loaded: its models are estimated "
            "with a fallback (cl100k_base, else bytes/4)",
            labels=["encoding"],
        )
        for encoding in sorted(state.tokenizer_fallbacks):
            fallbacks.add_metric([encoding], 1)
        yield fallbacks


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
