"""Kubernetes Events and alerts: what a notice says, how an Event is posted, and the
relay that turns the webhooks' notices (threshold crossings, exhaustion, burst pools)
into an Event and an alert, each said once across restarts and replicas."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import cast

import kopf

from budget_guard.domain.money import format_usd
from budget_guard.operator.alerts import Alert, AlertSender
from budget_guard.operator.compile import Manifest
from budget_guard.operator.conditions import (
    EVENT_BURST_ACTIVATED,
    EVENT_BURST_EXHAUSTED,
    EVENT_EXHAUSTED,
    EVENT_SOFT_LIMIT,
)
from budget_guard.store.notices import Notice, Notices

NOTICE_MEMORY = dt.timedelta(days=400)  # said once: remembered longer than any period

EventSink = Callable[[Manifest, str, str, str], None]  # resource, type, reason, message


def post_with_kopf(manifest: Manifest, kind: str, reason: str, message: str) -> None:
    """Queue a Kubernetes Event on the resource with Kopf's poster (in the background)."""
    kopf.event(_reference(manifest), type=kind, reason=reason, message=message)


def _reference(manifest: Manifest) -> kopf.Body:
    """What an Event needs to name the object."""
    metadata = manifest.get("metadata", {})
    raw = {
        "apiVersion": manifest.get("apiVersion"),
        "kind": manifest.get("kind"),
        "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
    }
    return kopf.Body(cast("kopf.RawBody", raw))


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
    def __init__(self, notices: Notices, alerts: AlertSender, post_event: EventSink) -> None:
        self._notices = notices
        self._alerts = alerts
        self._post_event = post_event

    async def relay(self, notice: Notice, manifests: Mapping[str, Manifest]) -> None:
        """An Event on the budget and an alert, unless said before (a Redis marker)."""
        manifest = manifests.get(notice.budget)
        if manifest is None:
            return  # a budget deleted since: its history stays, nobody to tell
        uid = manifest.get("metadata", {}).get("uid", notice.budget)
        marker = f"{uid}:{notice.period}:{notice.subject}:{notice.kind}:{notice.threshold}"
        if notice.kind.startswith("burst_"):
            marker = f"{uid}:{notice.pool}:{notice.kind}"
        if not await self._notices.first_time(marker, NOTICE_MEMORY):
            return
        kind, reason, message = describe(notice)
        self._post_event(manifest, kind, reason, message)
        details = {
            "period": notice.period,
            "subject": notice.subject or None,
            "threshold": notice.threshold or None,
            "pool": notice.pool or None,
            "usedUsd": format_usd(notice.used),
            "limitUsd": format_usd(notice.limit),
        }
        namespace = manifest.get("metadata", {}).get("namespace", "default")
        self._alerts.send(
            Alert(notice.budget, reason, message, {k: v for k, v in details.items() if v}),
            namespace,
            manifest.get("spec", {}),
        )
