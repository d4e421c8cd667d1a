"""What happened while the ledger was unreachable, replayed once it is back.

A request let through by fail-open is recorded here and reserved (forced: it
already happened) as soon as Redis answers again, so its spend is not lost; a
usage report for it that arrives first is kept and settled right after. A request
refused by fail-closed whose reservation may have landed anyway (a timeout) is
released. The journal is bounded: past its size the oldest entries are dropped
and counted.

With a directory (``--journal-dir``) every record is also appended to this process's
file there (``journal_file``) before the answer that depends on it: a process that
dies during an outage leaves its file behind, and the next process started on the
directory adopts and replays it. Replay is safe to repeat: a forced reservation of a
request id that has one already adds nothing (``RequestIdTaken``), and settling twice
charges once. Once everything is replayed the file is emptied.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budget_guard.domain.decision import BudgetCharge, charge_for
from budget_guard.domain.resolution import AppliedBudget, Attribution
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.ledger import Ledger, RequestIdTaken
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.journal_file import JournalFile

log = logging.getLogger(__name__)

BudgetRefs = tuple[tuple[str, str | None], ...]  # (budget id, subject) per charge


@dataclass
class Entry:
    request_id: str
    charges: Sequence[BudgetCharge]  # empty when read back from a file (see ``budgets``)
    cost_micros: int
    at: dt.datetime
    attribution: Attribution | None
    release: bool = False  # fail-closed: undo a reservation that may have landed
    actual_micros: int | None = None  # a usage report that arrived before the replay
    budgets: BudgetRefs = ()  # the charges' budgets, for an entry read back from a file

    @property
    def budget_refs(self) -> BudgetRefs:
        if self.charges:
            return tuple((charge.budget.id, charge.subject) for charge in self.charges)
        return self.budgets


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _added(entry: Entry) -> bytes:
    return _line(
        {
            "op": "add",
            "id": entry.request_id,
            "cost": entry.cost_micros,
            "at": entry.at.isoformat(),
            "who": list(entry.attribution) if entry.attribution else None,
            "budgets": [list(ref) for ref in entry.budget_refs],
            "release": entry.release,
            **({"actual": entry.actual_micros} if entry.actual_micros is not None else {}),
        }
    )


def _entry(record: dict[str, Any]) -> Entry:
    who = record["who"]
    return Entry(
        request_id=str(record["id"]),
        charges=(),
        cost_micros=int(record["cost"]),
        at=dt.datetime.fromisoformat(record["at"]),
        attribution=Attribution(*who) if who else None,
        release=bool(record["release"]),
        actual_micros=int(record["actual"]) if record.get("actual") is not None else None,
        budgets=tuple((str(ref[0]), ref[1]) for ref in record["budgets"]),
    )


def read_entries(lines: Iterable[bytes]) -> tuple[OrderedDict[str, Entry], int]:
    """The entries a journal file leaves to replay, and how many lines were unreadable
    (a line torn by a crash mid-write: it was never acknowledged)."""
    entries: OrderedDict[str, Entry] = OrderedDict()
    unreadable = 0
    for line in lines:
        try:
            record = json.loads(line)
            operation, request_id = record["op"], str(record["id"])
            if operation == "add":
                entries[request_id] = _entry(record)
            elif operation == "usage" and request_id in entries:
                entries[request_id].actual_micros = int(record["actual"])
            elif operation == "done":
                entries.pop(request_id, None)
        except (ValueError, KeyError, TypeError, IndexError):
            unreadable += 1
    return entries, unreadable


class ChargesFromConfig:
    """The charges of an entry read back from a file: its budgets, as the configuration
    in force defines them, at the entry's instant."""

    def __init__(self, config: ConfigHolder) -> None:
        self._config = config

    def __call__(self, refs: BudgetRefs, at: dt.datetime) -> tuple[BudgetCharge, ...] | None:
        """None while no configuration is loaded; budgets gone from it are left out."""
        config = self._config.current
        if config is None:
            return None
        snapshot = config.snapshot
        charges = []
        for budget_id, subject in refs:
            budget = snapshot.budget(budget_id)
            if budget is None:
                log.error("journaled spend on budget %s not recorded: it is gone", budget_id)
                continue
            charges.append(charge_for(snapshot, AppliedBudget(budget, subject), at))
        return tuple(charges)


class DegradedJournal:
    def __init__(
        self,
        ledger: Ledger,
        max_entries: int = 100_000,
        *,
        file: JournalFile | None = None,
        charges_for: Callable[[BudgetRefs, dt.datetime], tuple[BudgetCharge, ...] | None]
        | None = None,
    ) -> None:
        self._ledger = ledger
        self._max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._file = file
        self._charges_for = charges_for
        self._written = False  # something was appended since the file was last emptied
        self._late = False
        self.dropped = 0

    @classmethod
    def on_disk(
        cls,
        ledger: Ledger,
        directory: Path,
        charges_for: Callable[[BudgetRefs, dt.datetime], tuple[BudgetCharge, ...] | None],
    ) -> DegradedJournal:
        """A journal with its own file in ``directory``, holding what dead processes'
        files there left to replay (blocking: at start-up)."""
        file = JournalFile.create(directory)
        journal = cls(ledger, file=file, charges_for=charges_for)
        orphans = file.claim_orphans()
        unreadable = 0
        for orphan in orphans:
            entries, torn = read_entries(orphan.lines)
            unreadable += torn
            journal._entries.update(entries)
        if journal._entries:
            file.write_now([_added(entry) for entry in journal._entries.values()])
            journal._written = True
        for orphan in orphans:
            orphan.release()
        if orphans:
            log.warning(
                "adopted %d journal file(s) of stopped processes in %s: %d requests to replay%s",
                len(orphans),
                directory,
                len(journal._entries),
                f" ({unreadable} torn lines skipped)" if unreadable else "",
            )
        return journal

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def file(self) -> JournalFile | None:
        return self._file

    async def record(self, entry: Entry, within: float = 0.0) -> None:
        """Keep ``entry``; with a file, wait (up to ``within`` seconds: the answer must
        not miss the gateway's deadline) until it is on disk."""
        self._entries[entry.request_id] = entry
        lines = [_added(entry)]
        while len(self._entries) > self._max_entries:
            _, oldest = self._entries.popitem(last=False)
            self.dropped += 1
            lines.append(_line({"op": "done", "id": oldest.request_id}))
            log.error(
                "degraded journal full: spend of %s (%d micro-USD) not recorded",
                oldest.request_id,
                oldest.cost_micros,
            )
        await self._persist(lines, within)

    def entry(self, request_id: str) -> Entry | None:
        """The request's entry, while it waits to be replayed."""
        return self._entries.get(request_id)

    async def settle_later(self, request_id: str, actual_micros: int, within: float = 1.0) -> bool:
        """Keep a usage report for a request not replayed yet; False if unknown here."""
        entry = self._entries.get(request_id)
        if entry is None or entry.release:
            return False
        entry.actual_micros = actual_micros
        usage = _line({"op": "usage", "id": request_id, "actual": actual_micros})
        await self._persist([usage], within)
        return True

    async def _persist(self, lines: list[bytes], within: float) -> None:
        if self._file is None:
            return
        self._written = True
        written = self._file.append(lines)
        try:
            await asyncio.wait_for(asyncio.shield(written), max(within, 0.0))
        except TimeoutError:
            if not self._late:
                log.warning("the fail-open journal's disk is slower than the gateway's deadline")
            self._late = True
            return
        self._late = False

    async def replay(self, now: dt.datetime) -> int:
        """Replay in order until the ledger fails again; returns how many were done."""
        done: list[str] = []
        for request_id in list(self._entries):
            entry = self._entries.get(request_id)
            if entry is None:
                continue
            try:
                if not await self._replay_one(entry, now):
                    break  # no configuration yet to know its budgets by
            except LedgerUnavailable:
                break
            if self._entries.get(request_id) is entry:
                del self._entries[request_id]
            done.append(request_id)
        self._compact(done)
        return len(done)

    def _compact(self, done: Sequence[str]) -> None:
        """Empty the file once everything in it is replayed; else mark what was."""
        if self._file is None or not self._written:
            return
        if not self._entries:
            self._file.truncate()
            self._written = False
        elif done:
            self._file.append([_line({"op": "done", "id": request_id}) for request_id in done])

    async def _replay_one(self, entry: Entry, now: dt.datetime) -> bool:
        if entry.release:
            await self._ledger.settle(entry.request_id, 0, now)  # "unknown" is fine too
            return True
        charges = entry.charges
        if not charges and entry.budgets:
            if self._charges_for is None:
                return False
            rebuilt = self._charges_for(entry.budgets, entry.at)
            if rebuilt is None:
                return False
            if not rebuilt:  # every budget it charged is gone: nothing to count it on
                self.dropped += 1
                return True
            charges = entry.charges = rebuilt
        with contextlib.suppress(RequestIdTaken):  # it had landed after all: nothing to add
            await self._ledger.reserve(
                entry.request_id,
                charges,
                entry.cost_micros,
                entry.at,
                entry.attribution,
                force=True,
            )
        settled = None
        while entry.actual_micros is not None and entry.actual_micros != settled:
            # Again if a report was kept meanwhile (it found no reservation yet): the
            # entry goes right after this check, with no await in between.
            settled = entry.actual_micros
            await self._ledger.settle(entry.request_id, settled, now, source="journal")
        return True

    async def keep_replaying(self, interval: float, clock: Callable[[], dt.datetime]) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._entries:
                replayed = await self.replay(clock())
                if replayed:
                    log.info("replayed %d requests decided while the ledger was away", replayed)

    async def close(self) -> None:
        """Write what is queued and close the file (removed when nothing is left)."""
        if self._file is None:
            return
        await self._file.drain()
        self._file.close(remove=not self._entries)
