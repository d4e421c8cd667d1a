"""Alerts: the same notices as the Kubernetes Events, posted to a webhook URL.

A budget's ``spec.alerts.secretRef`` names a Secret holding the URL: in the budget's
namespace unless it says another. The operator reads Secrets only in the namespaces
it is allowed to (``--alert-secret-namespace``; the Helm chart grants exactly those),
so a Secret elsewhere is reported on the condition without asking the API server,
which would answer Forbidden. The payload is Slack-compatible (``{"text": ...}``) or
a generic JSON object. Sending happens in background tasks with retries and doubling
delays, so reconciliation never waits on it; the outcome is shown on the budget's
``AlertsReady`` condition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from budget_guard.operator.conditions import (
    ALERTS_CONFIGURED,
    DELIVERED,
    DELIVERY_FAILED,
    SECRET_NAMESPACE_NOT_ALLOWED,
    SECRET_NOT_FOUND,
)
from budget_guard.operator.kube import KubeApi, SecretMissing
from budget_guard.operator.status import AlertState
from budget_guard.store.errors import LedgerUnavailable

log = logging.getLogger(__name__)

_SECRET_PROBLEMS = (SECRET_NOT_FOUND, SECRET_NAMESPACE_NOT_ALLOWED)


@dataclass(frozen=True)
class SecretLocation:
    namespace: str
    name: str
    key: str

    @classmethod
    def of(cls, budget_namespace: str, config: Mapping[str, Any]) -> SecretLocation:
        ref = config.get("secretRef") or {}
        return cls(
            str(ref.get("namespace") or budget_namespace),
            str(ref.get("name")),
            str(ref.get("key") or "url"),
        )


@dataclass(frozen=True)
class Alert:
    budget: str  # namespace/name
    kind: str  # the Event reason
    message: str
    details: Mapping[str, Any]
    id: str = ""  # the Event's name: the same for a resent copy, so a receiver can drop it


def payload(alert: Alert, style: str) -> dict[str, Any]:
    if style == "Slack":
        return {"text": f":warning: *{alert.kind}* — {alert.budget}: {alert.message}"}
    identity = {"id": alert.id} if alert.id else {}
    return {
        **identity,
        "budget": alert.budget,
        "reason": alert.kind,
        "message": alert.message,
        **dict(alert.details),
    }


class AlertSender:
    def __init__(
        self,
        kube: KubeApi,
        session: aiohttp.ClientSession,
        attempts: int = 6,
        first_delay: float = 1.0,
        recheck_seconds: float = 30.0,
        secret_namespaces: frozenset[str] = frozenset(),  # empty: any namespace
    ) -> None:
        self._kube = kube
        self._secret_namespaces = secret_namespaces
        self._session = session
        self._attempts = attempts
        self._first_delay = first_delay
        self._states: dict[str, AlertState] = {}
        self._recheck = recheck_seconds
        self._checked: dict[str, tuple[SecretLocation, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()  # ids of alerts being delivered

    def state(self, budget_key: str, spec: Mapping[str, Any]) -> AlertState | None:
        """The AlertsReady condition's content for a budget (None: no alerts configured)."""
        if not spec.get("alerts"):
            return None
        return self._states.get(
            budget_key, AlertState(True, ALERTS_CONFIGURED, "alerts are configured")
        )

    async def verify(self, budget_key: str, namespace: str, spec: Mapping[str, Any]) -> None:
        """Check the budget's Secret can be read (at most every ``recheck_seconds``)."""
        config = spec.get("alerts")
        if not config:
            return
        target = SecretLocation.of(namespace, config)
        last = self._checked.get(budget_key)
        now = time.monotonic()
        if last is not None and last[0] == target and now - last[1] < self._recheck:
            return
        self._checked[budget_key] = (target, now)
        try:
            await self._read_url(target)
        except SecretMissing as error:
            self._states[budget_key] = AlertState(False, error.reason, str(error))
            return
        if budget_key in self._states and self._states[budget_key].reason in _SECRET_PROBLEMS:
            del self._states[budget_key]  # the Secret is there now

    def send(
        self,
        alert: Alert,
        namespace: str,
        spec: Mapping[str, Any],
        done: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Start sending in the background; ``done`` runs once it is delivered or given
        up (not when the operator stops first). No-op when the budget has no alerts."""
        config = spec.get("alerts")
        if not config:
            return
        task = asyncio.create_task(self._deliver_then(alert, namespace, config, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def delivering(self, alert_id: str) -> bool:
        return alert_id in self._in_flight

    async def _deliver_then(
        self,
        alert: Alert,
        namespace: str,
        config: Mapping[str, Any],
        done: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self._in_flight.add(alert.id)
        try:
            await self._deliver(alert, namespace, config)
            if done is not None:
                await done()
        except LedgerUnavailable as error:  # still in the outbox: delivered again later
            log.warning("alert %s delivered, not yet taken out of the outbox: %s", alert.id, error)
        finally:
            self._in_flight.discard(alert.id)

    async def _deliver(self, alert: Alert, namespace: str, config: Mapping[str, Any]) -> None:
        try:
            url = await self._read_url(SecretLocation.of(namespace, config))
        except SecretMissing as error:
            self._states[alert.budget] = AlertState(False, error.reason, str(error))
            log.warning("alert for %s not sent: %s", alert.budget, error)
            return
        body = payload(alert, str(config.get("format") or "Generic"))
        delay = self._first_delay
        last_error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                timeout = aiohttp.ClientTimeout(total=10)
                async with self._session.post(url, json=body, timeout=timeout) as response:
                    if response.status < 300:
                        self._states[alert.budget] = AlertState(
                            True, DELIVERED, f"last alert ({alert.kind}) delivered"
                        )
                        return
                    last_error = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                last_error = f"{type(error).__name__}: {error}"
            log.warning(
                "alert %s for %s failed (attempt %d of %d): %s",
                alert.kind,
                alert.budget,
                attempt,
                self._attempts,
                last_error,
            )
            self._states[alert.budget] = AlertState(
                False,
                DELIVERY_FAILED,
                f"{alert.kind} alert not delivered after {attempt} attempts: {last_error}",
            )
            if attempt < self._attempts:
                await asyncio.sleep(delay)
                delay *= 2

    async def _read_url(self, location: SecretLocation) -> str:
        allowed = self._secret_namespaces
        if allowed and location.namespace not in allowed:
            raise SecretMissing(
                f"Secret {location.namespace}/{location.name} is in a namespace where the "
                f"operator may not read Secrets; allowed: {', '.join(sorted(allowed))}. Move "
                "the Secret to one of them (and set spec.alerts.secretRef.namespace), or allow "
                "the namespace (Helm value operator.alertSecretNamespaces).",
                SECRET_NAMESPACE_NOT_ALLOWED,
            )
        return await self._kube.secret_value(location.namespace, location.name, location.key)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()
