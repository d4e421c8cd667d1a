"""The operator while its ledger (Redis) cannot be reached: said on every resource, once
in the log per change, once as an Event per budget.

Validation needs no Redis, so each resource still gets its ``Accepted`` condition from
its spec; an LLMBudget gets ``Enforced`` and ``Ready`` False with reason
``LedgerUnavailable`` and a message naming the URL (password masked) and the error, and
a Warning Event when its Ready condition turns to that reason (from the second failed
try on: a blip of one turn changes nothing on the resources). The log gets one line
when the ledger becomes unreachable, one when the error changes, one when it answers
again, and no traceback. When it answers, the normal sync makes the budgets Enforced
and Ready again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from budget_guard.domain.instants import rfc3339
from budget_guard.operator.compile import CompiledResources, Manifest
from budget_guard.operator.conditions import EVENT_LEDGER_UNAVAILABLE, LEDGER_UNAVAILABLE, READY
from budget_guard.operator.events import Announcement, EventSink
from budget_guard.operator.kube import KubeApi
from budget_guard.operator.status import changed, ledger_unavailable_status
from budget_guard.store.connect import describe
from budget_guard.store.errors import LedgerUnavailable

log = logging.getLogger(__name__)

RETRY_SECONDS = (1.0, 2.0, 4.0, 5.0)  # between tries while the ledger is down (then 5 s)
STATUS_WRITERS = 8


class LedgerOutage:
    def __init__(
        self,
        redis_url: str,
        kube: KubeApi,
        post_event: EventSink,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._where = describe(redis_url)
        self._kube = kube
        self._post_event = post_event
        self._clock = clock
        self._error: str | None = None  # None: the ledger answers
        self._since: dt.datetime | None = None
        self._tries = 0
        self._writers = asyncio.Semaphore(STATUS_WRITERS)

    @property
    def down(self) -> bool:
        return self._error is not None

    @property
    def lasting(self) -> bool:
        """Down for more than one try: worth a status write and an Event per budget (a
        single failed turn, a blip, is not)."""
        return self._tries >= 1

    @property
    def message(self) -> str:
        return (
            f"the ledger (Redis at {self._where}) cannot be reached: {self._error}; the "
            "webhooks apply each budget's failureMode until it can"
        )

    def failed(self, error: LedgerUnavailable) -> None:
        """The ledger did not answer: log it if that is news."""
        text = str(error)
        if self._error is None:
            self._since = self._clock()
            log.warning("the ledger at %s cannot be reached: %s", self._where, text)
        elif text != self._error:
            log.warning("the ledger at %s still cannot be reached: %s", self._where, text)
        self._error = text

    def answered(self) -> bool:
        """The ledger answered a whole turn; True if it was down until now."""
        if self._error is None:
            return False
        down_for = self._clock() - self._since if self._since else dt.timedelta()
        log.info(
            "the ledger at %s answers again (unreachable for %ds)",
            self._where,
            int(down_for.total_seconds()),
        )
        self._error, self._since, self._tries = None, None, 0
        return True

    async def wait(self) -> None:
        """Before the next try: 1, 2, 4, then every 5 seconds."""
        await asyncio.sleep(RETRY_SECONDS[min(self._tries, len(RETRY_SECONDS) - 1)])
        self._tries += 1

    async def report(self, compiled: CompiledResources) -> None:
        """Say on every resource that the ledger cannot be reached (writes only changes)."""
        await asyncio.gather(
            *(
                self._report_one(key, manifest, compiled)
                for key, manifest in compiled.manifests.items()
            )
        )

    async def _report_one(self, key: str, manifest: Manifest, compiled: CompiledResources) -> None:
        status = ledger_unavailable_status(key, compiled, self.message, self._clock())
        if not changed(manifest.get("status"), status):
            return
        if manifest.get("kind") == "LLMBudget" and not _said_already(manifest):
            await self._post_event(
                Announcement(
                    manifest,
                    "Warning",
                    EVENT_LEDGER_UNAVAILABLE,
                    self.message,
                    f"{manifest.get('metadata', {}).get('uid')}:ledger-unavailable:"
                    f"{rfc3339(self._since or self._clock())}",
                )
            )
        namespace, name = key.split("/", 1)
        plural = "llmbudgets" if manifest.get("kind") == "LLMBudget" else "burstbudgets"
        async with self._writers:
            await self._kube.patch_status(plural, namespace, name, status)


def _said_already(manifest: Manifest) -> bool:
    """Does the status already show this outage (Ready False for LedgerUnavailable)?"""
    conditions: list[Mapping[str, Any]] = (manifest.get("status") or {}).get("conditions") or []
    return any(c.get("type") == READY and c.get("reason") == LEDGER_UNAVAILABLE for c in conditions)
