"""The operator's loop in process, against the real API server and Redis, with a
clock the test moves: what only time can show (a period ending)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import aiohttp
import pytest
from redis.asyncio import Redis

from budget_guard.localservices import KubeAPIServer
from budget_guard.operator.alerts import AlertSender
from budget_guard.operator.controller import Controller
from budget_guard.operator.events import Announcement
from budget_guard.operator.kube import KubeApi
from budget_guard.operator.settings import OperatorSettings
from budget_guard.store.published_config import PublishedConfigStore
from tests.fixtures.operator import Cluster
from tests.fixtures.webhook import Clock

pytestmark = [pytest.mark.kube, pytest.mark.redis]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    async def __call__(self, said: Announcement) -> bool:
        name = said.manifest["metadata"]["name"]
        self.events.append((name, said.kind, said.reason, said.message))
        return True

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.events]


@pytest.fixture
async def loop(
    crds: KubeAPIServer, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Controller, Cluster, Clock, Recorder]]:
    monkeypatch.setenv("KUBECONFIG", str(crds.kubeconfig_path))
    cluster = Cluster.fresh(crds, "loop")
    settings = OperatorSettings(namespaces=(cluster.namespace,), publish_delay_seconds=0)
    kube = KubeApi()
    clock = Clock(dt.datetime(2026, 11, 28, 23, 50, tzinfo=dt.UTC))
    recorder = Recorder()
    alerts = AlertSender(kube, aiohttp.ClientSession())
    controller = Controller(settings, redis_client, kube, alerts, clock, recorder)
    try:
        yield controller, cluster, clock, recorder
    finally:
        await alerts.close()
        kube.close()


async def sync(controller: Controller) -> None:
    await controller.resync()  # no Kopf here: a list tells what changed
    await controller.sync()


async def test_a_new_period_is_announced_once(
    loop: tuple[Controller, Cluster, Clock, Recorder],
) -> None:
    controller, cluster, clock, recorder = loop
    cluster.budget("daily", "1.00", scope={"tenant": "acme"}, period="Daily")
    await controller.turn()  # publishes, then syncs
    status = cluster.status("llmbudgets", "daily")
    assert status["periodKey"] == "2026-11-28"
    assert status["resetsAt"] == "2026-11-29T00:00:00Z"
    assert cluster.condition("llmbudgets", "daily", "Ready")["status"] == "True"

    assert clock.now is not None
    clock.now += dt.timedelta(minutes=15)  # 00:05 the next day
    await sync(controller)
    await sync(controller)
    assert recorder.reasons() == ["PeriodReset"]
    name, kind, _, message = recorder.events[0]
    assert (name, kind) == ("daily", "Normal")
    assert "2026-11-29" in message and "2026-11-28" in message
    assert cluster.status("llmbudgets", "daily")["periodKey"] == "2026-11-29"


async def test_a_status_is_written_only_when_it_changes(
    loop: tuple[Controller, Cluster, Clock, Recorder],
) -> None:
    controller, cluster, _, _ = loop
    cluster.budget("quiet", "1.00", scope={"tenant": "quiet"})
    await controller.turn()
    first = cluster.get("llmbudgets", "quiet")
    assert first is not None
    await sync(controller)
    await sync(controller)
    again = cluster.get("llmbudgets", "quiet")
    assert again is not None
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


async def test_a_resync_catches_up_on_what_no_watch_event_told(
    loop: tuple[Controller, Cluster, Clock, Recorder], redis_client: Redis
) -> None:
    controller, cluster, _, _ = loop  # no Kopf here: the cache hears of nothing by itself
    for name in ("stays", "goes", "changes"):
        cluster.budget(name, "1.00", scope={"tenant": name})
    await controller.turn()  # the first turn lists (a resync), publishes, syncs

    async def published() -> dict[str, str]:
        config = await PublishedConfigStore(redis_client).read()
        assert config is not None
        return {m["metadata"]["name"]: m["spec"]["limit"] for m in config.budgets}

    assert await published() == {"stays": "1.00", "goes": "1.00", "changes": "1.00"}
    cluster.delete("llmbudgets", "goes")
    changed = cluster.get("llmbudgets", "changes")
    assert changed is not None
    changed["spec"]["limit"] = "2.00"
    status, answer = cluster.kube.request(
        "PUT", f"/apis/budgetguard.io/v1alpha1/namespaces/{cluster.namespace}/llmbudgets/changes",
        changed,
    )  # fmt: skip
    assert status == 200, answer
    cluster.budget("new", "3.00", scope={"tenant": "new"})

    await controller.turn()  # no event, no resync due: nothing seen, nothing listed
    assert await published() == {"stays": "1.00", "goes": "1.00", "changes": "1.00"}

    await controller.resync()  # what the loop does at start and every resync interval
    await controller.turn()
    assert await published() == {"stays": "1.00", "changes": "2.00", "new": "3.00"}
    await sync(controller)
    assert cluster.condition("llmbudgets", "new", "Ready")["status"] == "True"
    status_of_changed = cluster.status("llmbudgets", "changes")
    assert status_of_changed["observedGeneration"] == 2
    assert status_of_changed["effectiveLimit"] == "2.00"
