"""The fail-open journal's file: ordered appends, a lock per living process, adoption
of a dead process's file, torn lines skipped, emptied once replayed."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from redis.asyncio import Redis

from budget_guard.domain.resolution import Attribution
from budget_guard.store.ledger import Ledger
from budget_guard.webhook.journal import DegradedJournal, Entry, read_entries
from budget_guard.webhook.journal_file import SUFFIX, JournalFile

AT = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def unreachable_ledger() -> Ledger:
    return Ledger(Redis.from_url("redis://127.0.0.1:1/0"))


def entry(request_id: str, cost: int = 1_000, *, release: bool = False) -> Entry:
    return Entry(
        request_id,
        (),
        cost,
        AT,
        Attribution("acme", "u1", None, "gpt-4o"),
        release,
        budgets=(("team/acme", None), ("team/users", "u1")),
    )


async def test_appends_are_on_disk_when_awaited_and_read_back_in_order(tmp_path: Path) -> None:
    journal = DegradedJournal(
        unreachable_ledger(), file=JournalFile.create(tmp_path), charges_for=lambda *_: None
    )
    for index in range(5):
        await journal.record(entry(f"r{index}", 1_000 + index), within=5)
    assert await journal.settle_later("r2", 777, within=5)
    assert not await journal.settle_later("unknown", 1)
    assert journal.file is not None
    lines = journal.file.path.read_bytes().splitlines()
    entries, torn = read_entries(lines)
    assert torn == 0
    assert list(entries) == [f"r{index}" for index in range(5)]
    assert entries["r2"].actual_micros == 777
    assert entries["r4"].cost_micros == 1_004
    assert entries["r0"].budgets == (("team/acme", None), ("team/users", "u1"))
    assert entries["r0"].attribution == Attribution("acme", "u1", None, "gpt-4o")
    assert entries["r0"].at == AT
    await journal.close()
    assert journal.file.path.exists()  # five requests still to replay


async def test_one_batch_one_sync_for_a_loop_turn_of_appends(tmp_path: Path) -> None:
    journal = DegradedJournal(unreachable_ledger(), file=JournalFile.create(tmp_path))
    await asyncio.gather(*(journal.record(entry(f"r{i}"), within=5) for i in range(200)))
    assert journal.file is not None
    assert journal.file.syncs <= 2  # gathered, not one fdatasync per decision
    assert len(read_entries(journal.file.path.read_bytes().splitlines())[0]) == 200
    await journal.close()


def test_a_living_process_file_is_never_adopted(tmp_path: Path) -> None:
    alive = JournalFile.create(tmp_path)
    alive.write_now([b'{"op":"add"}'])
    newcomer = JournalFile.create(tmp_path)
    assert newcomer.claim_orphans() == []  # the lock is held
    alive.close(remove=False)  # its process "dies": the lock goes with it
    (orphan,) = newcomer.claim_orphans()
    assert orphan.path == alive.path
    assert orphan.lines == [b'{"op":"add"}']
    orphan.release()
    assert not alive.path.exists()
    newcomer.close(remove=True)
    assert list(tmp_path.iterdir()) == []


def test_a_dead_process_journal_is_adopted_replayable_and_torn_lines_skipped(
    tmp_path: Path,
) -> None:
    dead = tmp_path / f"node-1-42-abcd{SUFFIX}"
    dead.write_bytes(
        b'{"op":"add","id":"a","cost":5,"at":"2026-03-02T12:00:00+00:00","who":null,'
        b'"budgets":[["team/acme",null]],"release":false}\n'
        b'{"op":"add","id":"b","cost":7,"at":"2026-03-02T12:00:00+00:00","who":null,'
        b'"budgets":[["team/acme",null]],"release":false}\n'
        b'{"op":"usage","id":"b","actual":3}\n'
        b'{"op":"done","id":"a"}\n'
        b'{"op":"add","id":"c","co'  # torn by a crash mid-write: never acknowledged
    )
    journal = DegradedJournal.on_disk(unreachable_ledger(), tmp_path, lambda *_: None)
    assert len(journal) == 1
    assert not dead.exists()  # adopted: its content now lives in this process's file
    assert journal.file is not None
    (kept,) = read_entries(journal.file.path.read_bytes().splitlines())[0].values()
    assert (kept.request_id, kept.cost_micros, kept.actual_micros) == ("b", 7, 3)
    journal.file.close(remove=False)
