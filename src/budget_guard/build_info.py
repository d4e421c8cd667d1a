"""``budget_guard_build_info``: which version of which component a scrape came from."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Gauge

from budget_guard import __version__


def register_build_info(registry: CollectorRegistry, component: str) -> None:
    Gauge(
        "budget_guard_build_info",
        "the running version of LLM Budget Guard (always 1)",
        ["component", "version", "python_version"],
        registry=registry,
    ).labels(component, __version__, platform.python_version()).set(1)
