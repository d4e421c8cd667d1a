"""Each step of saying a notice, interrupted where the operator could die, against the
real API server and Redis: the Event is posted once, the alert delivered once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from budget_guard.localservices import KubeAPIServer
from budget_guard.operator.alerts import AlertSender
from budget_guard.operator.events import Announcement, Announcer, EventPoster
from budget_guard.operator.kube import KubeApi
from budget_guard.store.notices import Notice, Notices
from tests.fixtures.operator import AlertReceiver, Cluster, alert_receiver, eventually

pytestmark = [pytest.mark.kube, pytest.mark.redis]

REPLAYED = Notice(id="1-0", kind="soft_limit", budget="acme/acme-daily")  # its cursor


@dataclass
class Parts:
    cluster: Cluster
    notices: Notices
    alerts: AlertSender
    poster: EventPoster
    receiver: AlertReceiver
    manifest: dict[str, Any]

    def announcer(self) -> Announcer:
        """A fresh operator's (nothing in memory)."""
        return Announcer(self.notices, self.alerts, self.poster)

    def announcement(self, threshold: int) -> Announcement:
        uid = self.manifest["metadata"]["uid"]
        return Announcement(
            self.manifest,
            "Warning",
            "SoftLimitReached",
            f"{threshold}% of the limit reached",
            f"{uid}:2026-12::soft_limit:{threshold}",
        )


@pytest.fixture
async def parts(
    crds: KubeAPIServer, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Parts]:
    monkeypatch.setenv("KUBECONFIG", str(crds.kubeconfig_path))
    cluster = Cluster.fresh(crds, "said")
    kube = KubeApi()
    alerts = AlertSender(kube, aiohttp.ClientSession(), first_delay=0.05)
    async with alert_receiver() as receiver:
        cluster.secret("hook", {"url": receiver.url})
        manifest = cluster.budget(
            "acme", "1.00", scope={"tenant": "acme"}, alerts={"secretRef": {"name": "hook"}}
        )
        try:
            yield Parts(
                cluster, Notices(redis_client), alerts, EventPoster(kube), receiver, manifest
            )
        finally:
            await alerts.close()
            kube.close()


async def test_dying_after_the_event_before_the_acknowledgement(parts: Parts) -> None:
    said = parts.announcement(80)
    assert await parts.poster(said) is True  # posted; then the operator died
    await parts.announcer().say(said, {"threshold": 80}, cursor=REPLAYED)  # the notice, replayed
    await eventually(lambda: len(parts.receiver.received) == 1, what="one alert")
    events = parts.cluster.events("acme")
    assert [e["metadata"]["name"] for e in events] == [said.name]
    assert parts.receiver.received[0]["id"] == said.name
    await eventually(parts.notices.outbox, lambda box: box == {}, what="the outbox emptied")
    await parts.announcer().say(said, {"threshold": 80}, cursor=REPLAYED)  # replayed once more
    assert len(parts.cluster.events("acme")) == 1
    assert len(parts.receiver.received) == 1


async def test_dying_after_the_acknowledgement_before_the_alert(parts: Parts) -> None:
    said = parts.announcement(90)
    entry = {
        "budget": f"{parts.cluster.namespace}/acme",
        "reason": said.reason,
        "message": said.message,
        "details": {"threshold": 90},
    }
    assert await parts.poster(said) is True
    await parts.notices.acknowledge(said.key, outbox=(said.name, json.dumps(entry)))
    # the operator died here; the next leader finds the alert in the outbox
    key = f"{parts.cluster.namespace}/acme"
    await parts.announcer().resume({key: parts.manifest})
    await eventually(lambda: len(parts.receiver.received) == 1, what="the alert, once")
    await eventually(parts.notices.outbox, lambda box: box == {}, what="the outbox emptied")
    await parts.announcer().resume({key: parts.manifest})
    await parts.announcer().say(said, {"threshold": 90})  # a replay finds the marker
    assert len(parts.receiver.received) == 1
    assert parts.receiver.received[0]["id"] == said.name
    assert len(parts.cluster.events("acme")) == 1


async def test_an_api_server_that_is_away_is_tried_again(
    parts: Parts, crds: KubeAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    said = parts.announcement(70)
    kube = KubeApi()
    patient = EventPoster(kube, attempts=30, first_delay=0.2)
    caplog.set_level(logging.WARNING, logger="budget_guard.operator.events")

    def refused() -> int:
        return sum(
            f"{said.name} (SoftLimitReached) not posted" in r.getMessage() for r in caplog.records
        )

    try:
        await asyncio.to_thread(crds.stop_apiserver)
        posting = asyncio.create_task(patient(said))  # while the API server is away
        await eventually(refused, lambda tries: tries >= 3, what="three attempts refused")
        assert not posting.done()
        crds.start_apiserver()
        await posting
        assert await patient(said) is False  # there already: 409, done
    finally:
        kube.close()
    assert [e["metadata"]["name"] for e in parts.cluster.events("acme")] == [said.name]
