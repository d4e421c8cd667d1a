"""The operator's settings: typed, from flags or ``BUDGET_GUARD_<NAME>`` variables."""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

ENV_PREFIX = "BUDGET_GUARD_"


@dataclass(frozen=True)
class OperatorSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    sync_interval_seconds: float = 15.0  # status from spend
    publish_delay_seconds: float = 0.5  # gather changes into one published config
    standalone: bool = False  # no peering: the only replica
    priority: int = 0  # peering: the highest live priority is the active replica
    peering_name: str = "llm-budget-guard"
    peering_lifetime_seconds: int = 60  # a silent replica is considered gone after this
    liveness_endpoint: str = ""  # e.g. http://0.0.0.0:8080/healthz; empty: none
    kopf_workers: int = 32  # resources Kopf processes at once (each may hold a connection)
    alert_attempts: int = 6  # first try, then retries with doubling delays
    alert_first_delay_seconds: float = 1.0
    log_level: str = "INFO"

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> OperatorSettings:
        return cls(
            redis_url=ns.redis_url,
            namespaces=tuple(ns.namespace or _env_list("--namespace")),
            sync_interval_seconds=ns.sync_interval_seconds,
            standalone=ns.standalone,
            priority=ns.priority if ns.priority is not None else random.randint(1, 32_000),  # noqa: S311
            peering_name=ns.peering_name,
            peering_lifetime_seconds=ns.peering_lifetime_seconds,
            liveness_endpoint=ns.liveness_endpoint,
            kopf_workers=ns.kopf_workers,
            alert_attempts=ns.alert_attempts,
            log_level=ns.log_level.upper(),
        )


def _env(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _env_list(flag: str) -> list[str]:
    return [item.strip() for item in os.environ.get(_env(flag), "").split(",") if item.strip()]


def _default(flag: str, fallback: str | None) -> str | None:
    return os.environ.get(_env(flag), fallback)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="budget-guard operator")

    def option(flag: str, help_text: str, **kwargs: object) -> None:
        parser.add_argument(flag, help=f"{help_text} [env {_env(flag)}]", **kwargs)  # type: ignore[arg-type]

    option(
        "--redis-url",
        "the ledger's Redis",
        default=_default("--redis-url", OperatorSettings.redis_url),
    )
    option(
        "--namespace",
        "watch only this namespace (repeatable, or comma-separated in the variable; default: all)",
        action="append",
        default=None,
    )
    option(
        "--sync-interval-seconds",
        "how often status is refreshed from spend",
        type=float,
        default=float(_default("--sync-interval-seconds", "15") or 15),
    )
    option(
        "--standalone",
        "run without peering (a single replica)",
        action="store_true",
        default=_default("--standalone", "") in ("1", "true", "yes"),
    )
    option(
        "--priority",
        "peering priority (default: random, so replicas never tie)",
        type=int,
        default=_default("--priority", None),
    )
    option(
        "--peering-name",
        "the ClusterKopfPeering / KopfPeering object replicas share",
        default=_default("--peering-name", OperatorSettings.peering_name),
    )
    option(
        "--peering-lifetime-seconds",
        "after how long without a keep-alive a replica counts as gone",
        type=int,
        default=int(_default("--peering-lifetime-seconds", "60") or 60),
    )
    option(
        "--liveness-endpoint",
        "serve Kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
        default=_default("--liveness-endpoint", ""),
    )
    option(
        "--kopf-workers",
        "resources processed at once (each may hold an API connection)",
        type=int,
        default=int(_default("--kopf-workers", "32") or 32),
    )
    option(
        "--alert-attempts",
        "tries per alert before it is reported failed",
        type=int,
        default=int(_default("--alert-attempts", "6") or 6),
    )
    option("--log-level", "DEBUG, INFO, WARNING, ERROR", default=_default("--log-level", "INFO"))
    return parser


def parse(argv: Sequence[str] | None = None) -> OperatorSettings:
    return OperatorSettings.from_namespace(build_parser().parse_args(argv))
