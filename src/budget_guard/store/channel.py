"""One Redis connection that carries the commands of many concurrent callers.

Why not redis-py's pool on the decision path: there, each caller holds a pooled
connection for its whole round trip, so a burst of N decisions costs N connections
and N writes and reads, and waiting for a free connection counts as waiting for
Redis. Here every command submitted in one turn of the event loop goes out in one
write, and replies are read back in order by one reader: a burst costs a system
call each way per batch, and Redis runs the pipelined scripts one after the other,
each as atomic as it was alone. redis-py still makes the connection (TLS, ACL login,
database, Sentinel discovery); only the pipelining is ours.

Redis health is judged on the connection, never on a caller's own wait:

- *stalled*: commands are outstanding and no reply has come back for
  ``stall_timeout_seconds``, counted from the write (a busy event loop that has
  not yet read a reply that did arrive is not a stall: see ``_watchdog_fired``);
- *down*: the connection failed, or is being made again.

Either way outstanding calls fail with ``LedgerUnavailable`` and new calls fail at
once, without waiting, until a connection answers again. Connections are made by a
keeper task in the background, never by a caller: a burst of checks arriving at
the moment of a reconnect is never kept waiting for it, and a connect that is slow
because this process is busy is never taken for an outage.

One instance per process, on one event loop; ``start()`` before use.
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

from budget_guard.store.errors import LedgerUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelSettings:
    # No reply for this long while commands are outstanding: Redis is stalled.
    stall_timeout_seconds: float = 0.05
    # Connections are made in the background, so this does not delay any decision.
    connect_timeout_seconds: float = 1.0
    # Between failed attempts to connect: doubling from the first to the most.
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
        """``pool``: connections for this channel alone, made with ``socket_timeout=None``
        (redis-py would otherwise put every write and read in a timer of its own; the
        channel judges timeouts itself). ``preload``: commands sent first on every new
        connection (SCRIPT LOAD)."""
        self.settings = settings or ChannelSettings()
        self._pool = pool
        self._preload = tuple(preload)
        self._clock = clock
        self._unsent: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._outstanding: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._connection: AbstractConnection | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake_writer = asyncio.Event()
        self._dropped = asyncio.Event()
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_progress = 0.0
        self._last_error = "not connected yet"
        self._closed = False
        self.healthy = False  # connected, and no stall since the last reply
        self.outages = 0  # transitions from healthy to failed
        self.stalls = 0
        self.batches = 0
        self.commands = 0

    # -- life ----------------------------------------------------------------------

    async def start(self) -> bool:
        """Start keeping a connection; returns whether the first attempt succeeded."""
        if self._keeper is None:
            first = await self._connect()
            self._keeper = asyncio.get_running_loop().create_task(self._keep_connected(first))
        return self._connection is not None

    async def aclose(self) -> None:
        self._closed = True
        self.healthy = False  # closing is not an outage: nothing to report
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        connection = self._connection
        if connection is not None:
            self._drop(connection, LedgerUnavailable("closed", sent=True), "closed")
            await self._discard(connection)

    # -- calling -------------------------------------------------------------------

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """Queue ``command``; it is written with the others of this loop turn.

        Raises ``LedgerUnavailable`` at once while there is no working connection."""
        if self._connection is None:
            raise LedgerUnavailable(f"Redis unavailable: {self._last_error}", sent=False)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._unsent.append((command, future))
        self._wake_writer.set()
        return future

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def last_error(self) -> str:
        """Why the ledger was last unavailable (meaningful while not ``healthy``)."""
        return self._last_error

    # -- connecting ----------------------------------------------------------------

    async def _keep_connected(self, connected: bool) -> None:
        backoff = self.settings.first_backoff_seconds
        while not self._closed:
            if connected:
                await self._dropped.wait()
                backoff = self.settings.first_backoff_seconds
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_backoff_seconds)
            connected = await self._connect()

    async def _connect(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_seconds):
                connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError) as error:  # any failure to connect
            self._unavailable(f"cannot connect: {type(error).__name__}: {error}")
            return False
        if self._closed:
            await self._discard(connection)
            return False
        self._dropped.clear()
        self._connection = connection
        loop = asyncio.get_running_loop()
        self._unsent[:0] = [(command, loop.create_future()) for command in self._preload]
        self._reader = loop.create_task(self._read(connection))
        self._writer = loop.create_task(self._write(connection))
        self._wake_writer.set()
        if not self.healthy:
            self.healthy = True
            if self.outages:
                log.warning("ledger available again")
        return True

    # -- writing and reading -------------------------------------------------------

    async def _write(self, connection: AbstractConnection) -> None:
        while connection is self._connection:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._unsent and connection is self._connection:
                batch = self._unsent[: self.settings.max_batch]
                del self._unsent[: len(batch)]
                waiting_before = bool(self._outstanding)
                self._outstanding.extend(future for _, future in batch)
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
                if not waiting_before:  # Redis's time to answer starts with this write
                    self._last_progress = self._clock()
                self._arm_watchdog()

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
            if not self._outstanding:  # Redis sent what nobody asked for
                self._drop(connection, LedgerUnavailable("unexpected reply", sent=True), "protocol")
                return
            future = self._outstanding.popleft()
            self._last_progress = self._clock()
            if future.done():  # its caller gave up (cancelled)
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
        # Judged one loop turn later: the event loop runs I/O callbacks before due
        # timers, so a reply that arrived by now has already woken the reader, which
        # runs before the judgement. However busy the loop was, it is not a stall.
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
        unsent, self._unsent = self._unsent, []
        for _, future in unsent:
            if not future.done():
                future.set_exception(LedgerUnavailable(reason, sent=False))
        self._unavailable(reason)
        if not self._closed:
            asyncio.get_running_loop().create_task(self._discard(connection))
        self._dropped.set()

    def _unavailable(self, reason: str) -> None:
        if self.healthy:
            self.outages += 1
            log.warning("ledger unavailable: %s", reason)
        self.healthy = False
        self._last_error = reason

    async def _discard(self, connection: AbstractConnection) -> None:
        with contextlib.suppress(RedisError, OSError):
            await connection.disconnect(nowait=True)
        with contextlib.suppress(RedisError, OSError, KeyError):  # KeyError: released before
            await self._pool.release(connection)
