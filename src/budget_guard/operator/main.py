"""``budget-guard operator``: run Kopf with this project's registry and settings."""

from __future__ import annotations

import asyncio

import kopf

from budget_guard.operator.handlers import build_registry
from budget_guard.operator.settings import OperatorSettings


async def operate(settings: OperatorSettings, stop_flag: asyncio.Event | None = None) -> None:
    await kopf.operator(
        registry=build_registry(settings),
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=settings.standalone,
        priority=settings.priority,
        peering_name=None if settings.standalone else settings.peering_name,
        liveness_endpoint=settings.liveness_endpoint or None,
        memo=kopf.Memo(),
        stop_flag=stop_flag,
    )


def run(settings: OperatorSettings) -> int:
    asyncio.run(operate(settings))
    return 0
