"""The operator's resource cache against the real API server and Redis: it converges
on what the API server holds across restarts and missed watch events, and a sync that
finds nothing changed writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from budget_guard.localservices import KubeAPIServer, RedisServer
from budget_guard.store.published_config import PublishedConfigStore
from tests.fixtures.operator import Cluster, after_syncs, eventually, running_operator

pytestmark = [pytest.mark.kube, pytest.mark.redis]


@pytest.fixture
def cluster(crds: KubeAPIServer) -> Cluster:
    return Cluster.fresh(crds, "cache")


async def published(redis_client: Redis) -> dict[str, str]:
    """The budgets the webhooks enforce: name to limit."""
    config = await PublishedConfigStore(redis_client).read()
    return {m["metadata"]["name"]: m["spec"]["limit"] for m in config.budgets} if config else {}


def new_limit(limit: str) -> Any:
    def change(budget: dict[str, Any]) -> None:
        budget["spec"]["limit"] = limit

    return change


def without_finalizers(budget: dict[str, Any]) -> None:
    budget["metadata"]["finalizers"] = []


async def test_what_changed_while_the_operator_was_down_is_caught_at_start(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    for name in ("stays", "goes", "changes"):
        cluster.budget(name, "1.00", scope={"tenant": name})
    cluster.budget("users", "0.10", scope={"user": "*", "tier": "free"})
    with running_operator(cluster, redis_server.url, tmp_path / "op1"):
        for name in ("stays", "goes", "changes", "users"):
            await eventually(lambda name=name: cluster.ready(name), what=f"{name} Ready")
    assert await published(redis_client) == {
        "stays": "1.00",
        "goes": "1.00",
        "changes": "1.00",
        "users": "0.10",
    }

    # While no operator runs: a deletion it cannot hold up (its finalizer taken off by
    # hand), a new limit, a new budget. No watch sees any of it.
    cluster.replace("llmbudgets", "goes", without_finalizers)
    cluster.delete("llmbudgets", "goes")
    assert cluster.get("llmbudgets", "goes") is None
    cluster.replace("llmbudgets", "changes", new_limit("2.00"))
    cluster.budget("new", "3.00", scope={"tenant": "new"})

    with running_operator(cluster, redis_server.url, tmp_path / "op2") as operator:
        await eventually(
            lambda: published(redis_client),
            lambda names: (
                names == {"stays": "1.00", "changes": "2.00", "new": "3.00", "users": "0.10"}
            ),
            what="the config as the API server holds it",
        )
        await eventually(lambda: cluster.ready("new"), what="new Ready")
        changed = await eventually(
            lambda: cluster.status("llmbudgets", "changes"),
            lambda status: (
                status.get("observedGeneration") == 2 and status.get("effectiveLimit") == "2.00"
            ),
            what="the new limit in status",
        )
        assert changed["state"] == "Ok"
        # Nothing changes from here on: the syncs that follow write no status at all.
        await after_syncs(operator, 1)
        before = cluster.versions("llmbudgets")
        await after_syncs(operator, 3)
        assert cluster.versions("llmbudgets") == before


async def test_a_sync_that_finds_nothing_changed_writes_nothing(
    cluster: Cluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    names = [f"b{n}" for n in range(6)]
    for name in names:
        cluster.budget(name, "1.00", scope={"tenant": name})
    cluster.budget("users", "0.10", scope={"user": "*", "tier": "free"})
    with running_operator(cluster, redis_server.url, tmp_path / "op") as operator:
        for name in [*names, "users"]:
            await eventually(lambda name=name: cluster.ready(name), what=f"{name} Ready")
        await after_syncs(operator, 1)
        before = cluster.versions("llmbudgets")
        await after_syncs(operator, 4)
        assert cluster.versions("llmbudgets") == before
        # ...and a change is still seen and written: the cache is fed by the watch.
        cluster.replace("llmbudgets", "b0", new_limit("5.00"))
        await eventually(
            lambda: cluster.status("llmbudgets", "b0").get("effectiveLimit"),
            lambda limit: limit == "5.00",
            what="b0's new limit in status",
        )
        after = cluster.versions("llmbudgets")
        assert {name for name in before if after[name] != before[name]} == {"b0"}
