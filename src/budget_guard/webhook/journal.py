"""What happened while the ledger was unreachable, replayed once it is back.

A request let through by fail-open is recorded here and reserved (forced: it
already happened) as soon as Redis answers again, so its spend is not lost; a
usage report for it that arrives first is kept and settled right after. A request
refused by fail-closed whose reservation may have landed anyway (a timeout) is
released. The journal is bounded: past its size the oldest entries are dropped
and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from budget_guard.domain.decision import BudgetCharge
from budget_guard.domain.resolution import Attribution
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.ledger import Ledger, RequestIdTaken

log = logging.getLogger(__name__)


@dataclass
class Entry:
    request_id: str
    charges: Sequence[BudgetCharge]
    cost_micros: int
    at: dt.datetime
    attribution: Attribution | None
    release: bool = False  # fail-closed: undo a reservation that may have landed
    actual_micros: int | None = None  # a usage report that arrived before the replay


class DegradedJournal:
    def __init__(self, ledger: Ledger, max_entries: int = 100_000) -> None:
        self._ledger = ledger
        self._max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, entry: Entry) -> None:
        self._entries[entry.request_id] = entry
        while len(self._entries) > self._max_entries:
            _, oldest = self._entries.popitem(last=False)
            self.dropped += 1
            log.error(
                "degraded journal full: spend of %s (%d micro-USD) not recorded",
                oldest.request_id,
                oldest.cost_micros,
            )

    def entry(self, request_id: str) -> Entry | None:
        """The request's entry, while it waits to be replayed."""
        return self._entries.get(request_id)

    def settle_later(self, request_id: str, actual_micros: int) -> bool:
        """Keep a usage report for a request not replayed yet; False if unknown here."""
        entry = self._entries.get(request_id)
        if entry is None or entry.release:
            return False
        entry.actual_micros = actual_micros
        return True

    async def replay(self, now: dt.datetime) -> int:
        """Replay in order until the ledger fails again; returns how many were done."""
        done = 0
        for request_id in list(self._entries):
            entry = self._entries[request_id]
            try:
                await self._replay_one(entry, now)
            except LedgerUnavailable:
                break
            del self._entries[request_id]
            done += 1
        return done

    async def _replay_one(self, entry: Entry, now: dt.datetime) -> None:
        if entry.release:
            await self._ledger.settle(entry.request_id, 0, now)  # "unknown" is fine too
            return
        with contextlib.suppress(RequestIdTaken):  # it had landed after all: nothing to add
            await self._ledger.reserve(
                entry.request_id,
                entry.charges,
                entry.cost_micros,
                entry.at,
                entry.attribution,
                force=True,
            )
        if entry.actual_micros is not None:
            await self._ledger.settle(entry.request_id, entry.actual_micros, now, source="journal")

    async def keep_replaying(self, interval: float, clock: Callable[[], dt.datetime]) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._entries:
                replayed = await self.replay(clock())
                if replayed:
                    log.info("replayed %d requests decided while the ledger was away", replayed)
