"""What the fail-open journal on disk costs a fail-open decision.

``python -m bench.journal [DIRECTORY]`` (default: a temporary directory) prints a
Markdown table: the in-memory journal (no ``--journal-dir``), a lone decision waiting
for its append and ``fdatasync``, a burst of decisions in one loop turn (one sync for
the batch), the bare ``write`` + ``fdatasync`` floor on that disk, and the event loop thread's own
CPU time per decision (what the journal holds the loop up). Nothing here is a pass/fail test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from budget_guard.domain.resolution import Attribution
from budget_guard.store.ledger import Ledger
from budget_guard.webhook.journal import DegradedJournal, Entry
from budget_guard.webhook.journal_file import JournalFile

LONE = 300
BURSTS, BURST = 20, 256


def _entry(index: int) -> Entry:
    return Entry(
        f"req-{index:08d}",
        (),
        10_350,
        dt.datetime.now(dt.UTC),
        Attribution("acme", "agent-7", "research", "gpt-4o"),
        budgets=(("team/acme", None), ("team/acme-users", "agent-7")),
    )


def _ledger() -> Ledger:
    return Ledger(Redis.from_url("redis://127.0.0.1:1/0"))  # never reached: records only


def _micros(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99) - 1] * 1e6


async def _lone(journal: DegradedJournal) -> tuple[list[float], float]:
    """Each decision waits for its own append; returns the latencies and the event
    loop thread's own CPU time per decision (what the journal holds the loop up: the
    disk's wait and sync happen in the worker thread)."""
    latencies = []
    cpu_started = time.thread_time()
    for index in range(LONE):
        started = time.perf_counter()
        await journal.record(_entry(index), within=5)
        latencies.append(time.perf_counter() - started)
    return latencies, (time.thread_time() - cpu_started) / LONE


async def _burst(journal: DegradedJournal) -> float:
    """Seconds per decision when BURST decide in one loop turn."""
    started = time.perf_counter()
    for round_ in range(BURSTS):
        await asyncio.gather(
            *(journal.record(_entry(round_ * BURST + i), within=5) for i in range(BURST))
        )
    return (time.perf_counter() - started) / (BURSTS * BURST)


def _floor(directory: Path) -> list[float]:
    fd = os.open(directory / "floor", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    line = b'{"op":"add","id":"req-00000000","cost":10350}' + b" " * 150 + b"\n"
    try:
        seconds = []
        for _ in range(LONE):
            started = time.perf_counter()
            os.write(fd, line)
            os.fdatasync(fd)
            seconds.append(time.perf_counter() - started)
        return seconds
    finally:
        os.close(fd)


async def measure(directory: Path) -> str:
    memory = DegradedJournal(_ledger(), max_entries=10**7)
    memory_lone, memory_cpu = await _lone(memory)
    memory_burst = await _burst(memory)
    on_disk = DegradedJournal(_ledger(), max_entries=10**7, file=JournalFile.create(directory))
    disk_lone, disk_cpu = await _lone(on_disk)
    disk_burst = await _burst(on_disk)
    assert on_disk.file is not None
    syncs = on_disk.file.syncs
    await on_disk.close()
    floor = _floor(directory)
    rows = [
        ("in memory (no --journal-dir), lone decision", *_micros(memory_lone)),
        ("on disk, lone decision (append + fdatasync)", *_micros(disk_lone)),
        ("bare write + fdatasync on this disk (floor)", *_micros(floor)),
    ]
    table = ["| fail-open decision | p50 µs | p99 µs |", "|---|---:|---:|"]
    table += [f"| {name} | {p50:.1f} | {p99:.1f} |" for name, p50, p99 in rows]
    table.append(
        f"| in memory, burst of {BURST} in one loop turn, per decision | "
        f"{memory_burst * 1e6:.1f} | |"
    )
    table.append(
        f"| on disk, burst of {BURST} in one loop turn, per decision | {disk_burst * 1e6:.1f} | |"
    )
    disk_writes = LONE + BURSTS * BURST
    notes = (
        f"\n{disk_writes} decisions written in {syncs} syncs. The event loop thread's own "
        f"CPU time per lone decision: {disk_cpu * 1e6:.1f} µs on disk, "
        f"{memory_cpu * 1e6:.1f} µs in memory (the wait for the disk is in the worker thread)."
    )
    return "\n".join(table) + notes


def main() -> None:
    if len(sys.argv) > 1:
        print(asyncio.run(measure(Path(sys.argv[1]))))
        return
    with tempfile.TemporaryDirectory(prefix="budget-guard-journal-") as directory:
        print(asyncio.run(measure(Path(directory))))


if __name__ == "__main__":
    main()
