"""The fail-open journal on disk: one append-only file per process in ``--journal-dir``.

Each line is one JSON record: ``add`` (a request let through, or refused with a
reservation that may have landed), ``usage`` (its usage, reported before it was
replayed) and ``done`` (replayed, or dropped). Appends made while a write is on its
way are gathered and written, then synced (``fdatasync``), together by one worker
thread: the event loop never waits on the disk, and a burst of fail-open decisions
costs one sync per batch, not one per decision.

Whose file is whose: a process holds an exclusive ``flock`` on its own file for its
whole life; the kernel drops the lock when the process dies, however it dies. A file
whose lock can be taken therefore belongs to a dead process: a process starting in the
same directory adopts it (copies what was not replayed into its own file, then deletes
it). So one directory can serve one process (an ``emptyDir`` that outlives a container
restart) or many (a shared volume).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".journal"
_OPENING = ".opening"  # a file not yet locked by its owner: never adopted


@dataclass
class Orphan:
    """A dead process's journal, locked by this process until ``release``."""

    path: Path
    fd: int
    lines: list[bytes]

    def release(self) -> None:
        """Delete it: what it held is in this process's own file now."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalFile:
    """This process's journal file; ``append`` and ``truncate`` are ordered."""

    def __init__(self, directory: Path, path: Path, fd: int) -> None:
        self.directory = directory
        self.path = path
        self._fd = fd
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._queue: list[bytes | None] = []  # None: truncate here
        self._waiting: asyncio.Future[bool] | None = None  # of what is queued
        self._busy = False
        self.syncs = 0  # batches written and synced
        self.failures = 0

    @classmethod
    def create(cls, directory: Path) -> JournalFile:
        """A new, locked file in ``directory`` (made if missing)."""
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        opening = directory / (name + _OPENING)
        fd = os.open(opening, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if not _lock(fd):  # a file nobody else knows of yet
            os.close(fd)
            raise OSError(f"cannot lock the new journal file {opening}")
        path = opening.with_name(name + SUFFIX)
        opening.rename(path)  # adoptable from now on, and already locked
        _sync_directory(directory)
        return cls(directory, path, fd)

    def claim_orphans(self) -> list[Orphan]:
        """Lock and read the journals of dead processes (blocking: at start-up)."""
        orphans = []
        for path in sorted(self.directory.iterdir()):
            if path == self.path or not path.name.endswith((SUFFIX, _OPENING)):
                continue
            orphan = self._claim(path)
            if orphan is not None:
                orphans.append(orphan)
        return orphans

    @staticmethod
    def _claim(path: Path) -> Orphan | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # adopted by another process meanwhile
            return None
        if not _lock(fd):  # its process is alive
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)  # adopted and deleted before we locked it
            with os.fdopen(os.dup(fd), "rb") as reader:
                lines = reader.read().splitlines()
        except FileNotFoundError:
            os.close(fd)
            return None
        return Orphan(path, fd, lines)

    def write_now(self, lines: Sequence[bytes]) -> None:
        """Append and sync at once (blocking: at start-up, before serving)."""
        if lines:
            self._write([*lines])

    def append(self, lines: Sequence[bytes]) -> asyncio.Future[bool]:
        """Queue ``lines``; the future is True once they are on disk (synced), False if
        writing failed (logged)."""
        self._queue.extend(lines)
        return self._queued()

    def truncate(self) -> asyncio.Future[bool]:
        """Empty the file, after everything queued before (compaction: all replayed)."""
        self._queue.append(None)
        return self._queued()

    def _queued(self) -> asyncio.Future[bool]:
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().call_soon(self._start)  # gather this loop turn's
        return self._waiting

    def _start(self) -> None:
        batch, waiting = self._queue, self._waiting
        self._queue, self._waiting = [], None
        if waiting is None:
            self._busy = False
            return
        done = asyncio.get_running_loop().run_in_executor(self._worker, self._write, batch)
        done.add_done_callback(lambda written: self._finished(written, waiting))

    def _finished(self, written: asyncio.Future[bool], waiting: asyncio.Future[bool]) -> None:
        if not waiting.done():
            waiting.set_result(written.result())
        if self._waiting is not None:  # more came while this batch was written
            self._start()
        else:
            self._busy = False

    def _write(self, batch: Sequence[bytes | None]) -> bool:
        """In the worker thread: write the batch in order, then one sync."""
        try:
            pending = bytearray()
            for item in batch:
                if item is None:
                    self._write_all(bytes(pending))
                    pending.clear()
                    os.ftruncate(self._fd, 0)
                else:
                    pending += item + b"\n"
            self._write_all(bytes(pending))
            os.fdatasync(self._fd)
        except OSError as error:
            self.failures += 1
            log.error("the fail-open journal %s cannot be written: %s", self.path, error)
            return False
        self.syncs += 1
        return True

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    async def drain(self) -> None:
        """Wait for everything queued to be written."""
        while self._waiting is not None or self._busy:
            if self._waiting is not None:
                await asyncio.shield(self._waiting)
            else:
                await asyncio.sleep(0.001)

    def close(self, *, remove: bool) -> None:
        """Stop writing (after ``drain``); ``remove``: nothing is left to replay."""
        self._worker.shutdown(wait=True)
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self._fd)
