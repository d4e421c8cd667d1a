"""One Redis connection that carries the commands of many concurrent callers.

Why not redis-py's pool on the decision path: there, each caller holds a pooled
connection for its whole round trip, so a burst of N decisions costs N connections
and N writes and reads, and waits for a free connection count as waiting for Redis.
Here every command submitted in one turn of the event loop goes out in one write,
and replies are read back in order by one reader: a burst costs a system call each
way per batch, and Redis runs the pipelined scripts one after the other, each as
atomic as it was alone. redis-py still makes the connection (TLS, ACL login,
database, Sentinel discovery); only the pipelining is ours.

Redis health is judged on the connection, never on a caller's own wait: Redis is
*stalled* when commands are outstanding and no reply has come back for
``stall_timeout_seconds``, and *down* when the connection fails or cannot be made.
Either fails the outstanding calls with ``LedgerUnavailable``; for a while after
(a growing back-off), new calls fail at once instead of waiting. A caller that
waited long in this process's own queue before its command was sent is never told
the ledger failed: that is the caller's overload, not Redis's.

One instance per process, on one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger(__name__)


class LedgerUnavailable(Exception):
    """The ledger could not answer: Redis is unreachable, or stopped answering.

    ``sent`` says whether the command may have reached Redis (and may still run
    there): a reservation that timed out may have landed, one never sent did not.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class ChannelSettings:
    # No reply for this long while commands are outstanding: Redis is stalled.
    stall_timeout_seconds: float = 0.05
    connect_timeout_seconds: float = 0.05
    # After a failure, calls fail at once for this long, doubling up to the maximum.
    first_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0
    max_batch: int = 512  # commands per write


class LedgerChannel:
    """``await channel.call(command)``: the reply to one pre-encoded RESP command."""

    def __init__(
        self,
        pool: ConnectionPool,
        settings: ChannelSettings | None = None,
        *,
        preload: Sequence[bytes] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``preload``: commands sent first on every new connection (SCRIPT LOAD)."""
        self.settings = settings or ChannelSettings()
        self._pool = pool
        self._preload = tuple(preload)
        self._clock = clock
        self._unsent: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._outstanding: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._connection: AbstractConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake_writer = asyncio.Event()
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_progress = 0.0
        self._retry_at = 0.0
        self._backoff = self.settings.first_backoff_seconds
        self._closed = False
        self._last_error = "not connected yet"
        self.healthy = True  # no failure since the last reply
        self.outages = 0  # transitions from healthy to failed
        self.stalls = 0
        self.batches = 0
        self.commands = 0

    # -- calling -------------------------------------------------------------------

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """Queue ``command``; it is written with the others of this loop turn.

        Raises ``LedgerUnavailable`` at once while Redis is known to be failing."""
        if self._closed:
            raise LedgerUnavailable("the ledger channel is closed", sent=False)
        if not self.healthy and self._clock() < self._retry_at:
            raise LedgerUnavailable(f"Redis unavailable: {self._last_error}", sent=False)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._unsent.append((command, future))
        if self._connection is None:
            self._ensure_connecting()
        else:
            self._wake_writer.set()
        return future

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def queued(self) -> int:
        return len(self._unsent)

    # -- connecting ----------------------------------------------------------------

    def _ensure_connecting(self) -> None:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_seconds):
                connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError) as error:
            reason = f"cannot connect: {type(error).__name__}: {error}"
            self._failed(LedgerUnavailable(reason, sent=False), reason)
            return
        self._connection = connection
        self._unsent[:0] = [
            (command, asyncio.get_running_loop().create_future()) for command in self._preload
        ]
        self._reader = asyncio.get_running_loop().create_task(self._read(connection))
        self._writer = asyncio.get_running_loop().create_task(self._write(connection))
        self._wake_writer.set()

    # -- writing and reading -------------------------------------------------------

    async def _write(self, connection: AbstractConnection) -> None:
        while connection is self._connection:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._unsent and connection is self._connection:
                batch = self._unsent[: self.settings.max_batch]
                del self._unsent[: len(batch)]
                if not self._outstanding:
                    self._last_progress = self._clock()
                self._outstanding.extend(future for _, future in batch)
                self._arm_watchdog()
                self.batches += 1
                self.commands += len(batch)
                try:
                    await connection.send_packed_command(
                        [command for command, _ in batch], check_health=False
                    )
                except (RedisError, OSError) as error:
                    reason = f"write failed: {type(error).__name__}: {error}"
                    self._drop(connection, LedgerUnavailable(reason, sent=True), reason)
                    return

    async def _read(self, connection: AbstractConnection) -> None:
        while connection is self._connection:
            try:
                reply: Any = await connection.read_response()
            except ResponseError as error:  # a whole error reply: the connection is fine
                reply = error
            except (RedisError, OSError) as error:
                reason = f"connection lost: {type(error).__name__}: {error}"
                self._drop(connection, LedgerUnavailable(reason, sent=True), reason)
                return
            if not self._outstanding:  # cannot happen unless Redis sent what was not asked
                self._drop(connection, LedgerUnavailable("unexpected reply", sent=True), "protocol")
                return
            future = self._outstanding.popleft()
            self._last_progress = self._clock()
            if not self.healthy:
                self._recovered()
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    # -- health --------------------------------------------------------------------

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and self._outstanding:
            loop = asyncio.get_running_loop()
            deadline = self._last_progress + self.settings.stall_timeout_seconds
            self._watchdog = loop.call_at(
                loop.time() + max(0.0, deadline - self._clock()), self._watchdog_fired
            )

    def _watchdog_fired(self) -> None:
        # Judged one loop turn later: a reply that arrived in the same turn as this
        # timer has its reader woken before the judgement, however busy the loop was.
        self._watchdog = None
        asyncio.get_running_loop().call_soon(self._judge)

    def _judge(self) -> None:
        connection = self._connection
        if not self._outstanding or connection is None:
            return
        silent = self._clock() - self._last_progress
        if silent >= self.settings.stall_timeout_seconds:
            self.stalls += 1
            reason = f"no reply from Redis for {silent * 1000:.0f} ms"
            self._drop(connection, LedgerUnavailable(reason, sent=True), reason)
        else:
            self._arm_watchdog()

    def _drop(self, connection: AbstractConnection, error: LedgerUnavailable, reason: str) -> None:
        """Give up on ``connection``: it may be mid-reply, so it is never reused."""
        if connection is not self._connection:
            return
        self._connection = None
        for task in (self._reader, self._writer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._reader = self._writer = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        outstanding, self._outstanding = self._outstanding, collections.deque()
        for future in outstanding:
            if not future.done():
                future.set_exception(error)
        asyncio.get_running_loop().create_task(self._discard(connection))
        self._failed(LedgerUnavailable(reason, sent=False), reason)

    def _failed(self, error: LedgerUnavailable, reason: str) -> None:
        """Fail what is queued, and fail new calls at once for the back-off."""
        unsent, self._unsent = self._unsent, []
        for _, future in unsent:
            if not future.done():
                future.set_exception(error)
        if self.healthy:
            self.outages += 1
            log.warning("ledger unavailable: %s", reason)
        self.healthy = False
        self._last_error = reason
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self.settings.max_backoff_seconds)

    def _recovered(self) -> None:
        self.healthy = True
        self._backoff = self.settings.first_backoff_seconds
        log.warning("ledger available again")

    async def _discard(self, connection: AbstractConnection) -> None:
        with contextlib.suppress(RedisError, OSError):
            await connection.disconnect(nowait=True)
        with contextlib.suppress(RedisError, OSError):
            await self._pool.release(connection)

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        connection = self._connection
        if connection is not None:
            self._drop(connection, LedgerUnavailable("closed", sent=True), "closed")
            await self._discard(connection)
