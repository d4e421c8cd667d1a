"""The operator's settings: typed, from flags or ``BUDGET_GUARD_<FLAG>`` variables."""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass

from budget_guard.options import Option, add_options
from budget_guard.store.connect import checked_redis_url


@dataclass(frozen=True)
class OperatorSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    sync_interval_seconds: float = 15.0  # status from spend
    insight_interval_seconds: float = 60.0  # forecasts and anomalies from the history
    publish_delay_seconds: float = 0.5  # gather changes into one published config
    standalone: bool = False  # no peering: the only replica
    priority: int = 0  # peering: the highest live priority is the active replica
    peering_name: str = "llm-budget-guard"
    peering_lifetime_seconds: int = 60  # a silent replica is considered gone after this
    liveness_endpoint: str = ""  # e.g. http://0.0.0.0:8080/healthz; empty: none
    metrics_address: str = ""  # HOST:PORT for /metrics, e.g. 0.0.0.0:9090; empty: none
    alert_secret_namespaces: tuple[str, ...] = ()  # empty: alert Secrets in any namespace
    kopf_workers: int = 32  # resources Kopf processes at once (each may hold a connection)
    alert_attempts: int = 6  # first try, then retries with doubling delays
    alert_first_delay_seconds: float = 1.0
    log_level: str = "INFO"

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> OperatorSettings:
        return cls(
            redis_url=ns.redis_url,
            namespaces=tuple(ns.namespace),
            sync_interval_seconds=ns.sync_interval_seconds,
            insight_interval_seconds=ns.insight_interval_seconds,
            standalone=ns.standalone,
            priority=ns.priority if ns.priority is not None else random.randint(1, 32_000),  # noqa: S311
            peering_name=ns.peering_name,
            peering_lifetime_seconds=ns.peering_lifetime_seconds,
            liveness_endpoint=ns.liveness_endpoint,
            metrics_address=ns.metrics_address,
            alert_secret_namespaces=tuple(ns.alert_secret_namespace),
            kopf_workers=ns.kopf_workers,
            alert_attempts=ns.alert_attempts,
            log_level=ns.log_level.upper(),
        )


_DEFAULTS = OperatorSettings()
_OPTIONS = (
    Option(
        "--redis-url",
        "the ledger's Redis: redis://, rediss://, unix://, "
        "redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db], or "
        "redis+cluster://[[user]:password@]host:port[,host:port...] (docs/redis-topologies.md)",
        checked_redis_url,
        _DEFAULTS.redis_url,
    ),
    Option(
        "--namespace",
        "watch only this namespace (repeatable, or comma-separated in the variable; default: all)",
        kind="list",
    ),
    Option(
        "--sync-interval-seconds",
        "how often status is refreshed from spend",
        float,
        _DEFAULTS.sync_interval_seconds,
    ),
    Option(
        "--insight-interval-seconds",
        "how often forecasts, anomalies and review figures are recomputed from the history "
        "(they are written with the next status sync)",
        float,
        _DEFAULTS.insight_interval_seconds,
    ),
    Option("--standalone", "run without peering (a single replica)", kind="switch"),
    Option("--priority", "peering priority (default: random, so replicas never tie)", int),
    Option(
        "--peering-name",
        "the ClusterKopfPeering / KopfPeering object replicas share",
        str,
        _DEFAULTS.peering_name,
    ),
    Option(
        "--peering-lifetime-seconds",
        "after how long without a keep-alive a replica counts as gone",
        int,
        _DEFAULTS.peering_lifetime_seconds,
    ),
    Option(
        "--liveness-endpoint",
        "serve Kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
        str,
        "",
    ),
    Option(
        "--metrics-address",
        "serve Prometheus metrics at HOST:PORT/metrics, e.g. 0.0.0.0:9090 (port 0: a free "
        "one, logged at start)",
        str,
        "",
    ),
    Option(
        "--alert-secret-namespace",
        "read alert Secrets only in this namespace (repeatable, or comma-separated in the "
        "variable; default: any); a budget naming a Secret elsewhere is told so on AlertsReady",
        kind="list",
    ),
    Option(
        "--kopf-workers",
        "resources processed at once (each may hold an API connection)",
        int,
        _DEFAULTS.kopf_workers,
    ),
    Option(
        "--alert-attempts",
        "tries per alert before it is reported failed",
        int,
        _DEFAULTS.alert_attempts,
    ),
    Option("--log-level", "DEBUG, INFO, WARNING, ERROR", str, _DEFAULTS.log_level),
)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="budget-guard operator")
    add_options(parser, _OPTIONS)
    return parser


def parse(argv: Sequence[str] | None = None) -> OperatorSettings:
    return OperatorSettings.from_namespace(build_parser().parse_args(argv))
