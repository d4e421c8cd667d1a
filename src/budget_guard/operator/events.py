"""Kubernetes Events and alerts, each said exactly once across retries, restarts and
replicas.

Every Event has a name derived from what it says (the object's uid, the reason, and
the notice's period, threshold, subject or pool): posting it again after a failed or
lost answer either creates it or finds it there (409 AlreadyExists), which counts as
done. The order, for each notice:

1. already said? (a marker in Redis, kept longer than any period; an Event expires
   from the API server after an hour, the marker does not): nothing to do;
2. post the Event, retried with doubling delays until the API server answers;
3. acknowledge, in one Redis transaction: set the marker, move the notice cursor, and
   put the alert in the outbox;
4. deliver the alert from the outbox (in the background, with its own retries), then
   take it out.

Dying before 3 replays the notice: the Event is found (409), the alert is queued once.
Dying after 3 leaves the alert in the outbox; the next leader delivers it. Only dying
between the receiver's 2xx and the outbox's removal sends an alert twice: its ``id``
(the Event's name) lets a receiver drop the copy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from budget_guard.domain.instants import rfc3339, utc_now
from budget_guard.domain.money import format_usd
from budget_guard.operator.alerts import Alert, AlertSender
from budget_guard.operator.compile import Manifest
from budget_guard.operator.conditions import (
    EVENT_BURST_ACTIVATED,
    EVENT_BURST_EXHAUSTED,
    EVENT_EXHAUSTED,
    EVENT_LEDGER_RESTORED,
    EVENT_SOFT_LIMIT,
)
from budget_guard.operator.kube import KubeApi, KubeUnavailable
from budget_guard.store.notices import Notice, Notices

log = logging.getLogger(__name__)

NOTICE_MEMORY = dt.timedelta(days=400)  # said once: remembered longer than any period
REPORTING_COMPONENT = "llm-budget-guard"
MAX_MESSAGE = 1024  # what the API server accepts in an Event's message
_NAME_LIMIT = 253
_DIGEST = 16


class EventNotPosted(RuntimeError):
    """The API server did not take an Event after every attempt; the notice stays
    unacknowledged and is tried again on the next turn."""


@dataclass(frozen=True)
class Announcement:
    """One Event on one object. ``key`` says which notice it is (it holds the object's
    uid and what distinguishes this notice from others of the same reason): the
    Event's name and the Redis marker both come from it."""

    manifest: Manifest
    kind: str  # Normal or Warning
    reason: str
    message: str
    key: str

    @property
    def name(self) -> str:
        return event_name(self.manifest, self.reason, self.key)

    @property
    def namespace(self) -> str:
        return str(self.manifest.get("metadata", {}).get("namespace") or "default")


def event_name(manifest: Manifest, reason: str, key: str) -> str:
    """``<object name>.<16 hex digits of sha256(reason, key)>``: a valid name, the same
    for the same notice."""
    digest = hashlib.sha256(f"{reason}\0{key}".encode()).hexdigest()[:_DIGEST]
    base = str(manifest.get("metadata", {}).get("name") or "object")
    base = re.sub(r"[^a-z0-9.-]", "-", base.lower())[: _NAME_LIMIT - _DIGEST - 1].strip(".-")
    return f"{base or 'object'}.{digest}"


def event_body(announcement: Announcement, now: dt.datetime) -> dict[str, Any]:
    manifest = announcement.manifest
    metadata = manifest.get("metadata", {})
    message = announcement.message
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": announcement.name, "namespace": announcement.namespace},
        "involvedObject": {
            "apiVersion": manifest.get("apiVersion"),
            "kind": manifest.get("kind"),
            "name": metadata.get("name"),
            "namespace": announcement.namespace,
            "uid": metadata.get("uid"),
        },
        "type": announcement.kind,
        "reason": announcement.reason,
        "message": message,
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": REPORTING_COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


EventSink = Callable[[Announcement], Awaitable[bool]]  # True: created, False: already there


class EventPoster:
    """Posts Events by name, retrying what the API server did not answer."""

    def __init__(
        self,
        kube: KubeApi,
        attempts: int = 6,
        first_delay: float = 0.5,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._kube = kube
        self._attempts = attempts
        self._first_delay = first_delay
        self._clock = clock

    async def __call__(self, announcement: Announcement) -> bool:
        delay = self._first_delay
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._kube.create_event(
                    announcement.namespace, event_body(announcement, self._clock())
                )
            except ApiException as error:  # refused for good (403, 422): trying again won't help
                log.error(
                    "Event %s (%s) refused: HTTP %s %s",
                    announcement.name,
                    announcement.reason,
                    error.status,
                    error.reason,
                )
                return False
            except KubeUnavailable as error:
                log.warning(
                    "Event %s (%s) not posted (attempt %d of %d): %s",
                    announcement.name,
                    announcement.reason,
                    attempt,
                    self._attempts,
                    error,
                )
                if attempt == self._attempts:
                    raise EventNotPosted(f"Event {announcement.name}: {error}") from error
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


class Announcer:
    """Says a notice once: the Event, then the acknowledgement, then the alert."""

    def __init__(self, notices: Notices, alerts: AlertSender, post_event: EventSink) -> None:
        self._notices = notices
        self._alerts = alerts
        self.post_event = post_event

    async def say(
        self,
        announcement: Announcement,
        alert_details: Mapping[str, Any] | None = None,
        *,
        remember: bool = True,
        cursor: Notice | None = None,
    ) -> None:
        """Post ``announcement`` and alert on it (``alert_details``: None, no alert),
        unless said before; ``cursor``: the notice to acknowledge with it."""
        marker = announcement.key if remember else None
        if marker is not None and await self._notices.said(marker):
            if cursor is not None:
                await self._notices.acknowledge(cursor=cursor)
            return
        await self.post_event(announcement)
        entry = self._outbox_entry(announcement, alert_details)
        outbox = (announcement.name, json.dumps(entry)) if entry is not None else None
        await self._notices.acknowledge(marker, NOTICE_MEMORY, cursor=cursor, outbox=outbox)
        if entry is not None:
            self._deliver(announcement.name, entry, announcement.manifest)

    async def say_restored(self, manifest: Manifest, owner_id: str, message: str, key: str) -> None:
        """Warn that spend the ledger had lost was put back (every time: not remembered).
        ``key`` tells this restoration from the object's others; the object's uid (else
        ``owner_id``) goes before it."""
        uid = manifest.get("metadata", {}).get("uid", owner_id)
        announcement = Announcement(
            manifest, "Warning", EVENT_LEDGER_RESTORED, message, f"{uid}:{key}"
        )
        await self.say(announcement, remember=False)

    def _outbox_entry(
        self, announcement: Announcement, details: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        if details is None or not announcement.manifest.get("spec", {}).get("alerts"):
            return None
        metadata = announcement.manifest.get("metadata", {})
        return {
            "budget": f"{metadata.get('namespace')}/{metadata.get('name')}",
            "reason": announcement.reason,
            "message": announcement.message,
            "details": dict(details),
        }

    def _deliver(self, name: str, entry: Mapping[str, Any], manifest: Manifest) -> None:
        alert = Alert(
            str(entry["budget"]),
            str(entry["reason"]),
            str(entry["message"]),
            dict(entry.get("details") or {}),
            id=name,
        )
        namespace = str(manifest.get("metadata", {}).get("namespace", "default"))

        async def delivered() -> None:
            await self._notices.delivered(name)

        self._alerts.send(alert, namespace, manifest.get("spec", {}), done=delivered)

    async def resume(self, manifests: Mapping[str, Manifest]) -> None:
        """Deliver what the outbox still holds (a previous leader died before it could)."""
        for name, text in (await self._notices.outbox()).items():
            if self._alerts.delivering(name):
                continue
            entry = json.loads(text)
            manifest = manifests.get(str(entry.get("budget")))
            if manifest is None:
                await self._notices.delivered(name)  # the budget is gone: nobody to alert
                continue
            log.info("delivering alert %s left in the outbox", name)
            self._deliver(name, entry, manifest)


def describe(notice: Notice) -> tuple[str, str, str]:
    """The Event a notice becomes: (type, reason, message)."""
    who = f"user {notice.subject}: " if notice.subject else ""
    used, limit = format_usd(notice.used), format_usd(notice.limit)
    if notice.kind == "soft_limit":
        return (
            "Warning",
            EVENT_SOFT_LIMIT,
            f"{who}{notice.threshold}% of the limit reached in period {notice.period} "
            f"(${used} of ${limit})",
        )
    if notice.kind == "exhausted":
        return (
            "Warning",
            EVENT_EXHAUSTED,
            f"{who}the limit is reached in period {notice.period} (${used} of ${limit}): "
            "requests are denied until the period resets",
        )
    if notice.kind == "burst_activated":
        return (
            "Normal",
            EVENT_BURST_ACTIVATED,
            f"the budget is spent; burst pool {notice.pool} takes over (${limit} approved)",
        )
    return (
        "Warning",
        EVENT_BURST_EXHAUSTED,
        f"burst pool {notice.pool} is spent (${used} of ${limit})",
    )


class NoticeRelay:
    def __init__(self, announcer: Announcer, notices: Notices) -> None:
        self._announcer = announcer
        self._notices = notices

    async def relay(self, notice: Notice, manifests: Mapping[str, Manifest]) -> None:
        """An Event on the budget and an alert, unless said before; then the notice is
        acknowledged (the cursor moves past it)."""
        manifest = manifests.get(notice.budget)
        if manifest is None:  # a budget deleted since: its history stays, nobody to tell
            await self._notices.acknowledge(cursor=notice)
            return
        uid = manifest.get("metadata", {}).get("uid", notice.budget)
        key = f"{uid}:{notice.period}:{notice.subject}:{notice.kind}:{notice.threshold}"
        if notice.kind.startswith("burst_"):
            key = f"{uid}:{notice.pool}:{notice.kind}"
        kind, reason, message = describe(notice)
        details = {
            "period": notice.period,
            "subject": notice.subject or None,
            "threshold": notice.threshold or None,
            "pool": notice.pool or None,
            "usedUsd": format_usd(notice.used),
            "limitUsd": format_usd(notice.limit),
        }
        await self._announcer.say(
            Announcement(manifest, kind, reason, message, key),
            {k: v for k, v in details.items() if v},
            cursor=notice,
        )
