"""Which of a replica's daemons runs the operator's loop.

Kopf runs a daemon on each peering object the replica watches (the cluster's one, or
one per namespace) and stops them all in a replica that peering pauses. Each daemon is
a candidate; the one with the smallest uid leads (runs the loop) and the others wait;
when the leader goes, the next one is woken (only it). So the loop runs exactly while
the replica is active, with no lock outside the process. Standalone, one candidate
runs until the operator closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Loop = Callable[[Callable[[], bool]], Awaitable[None]]  # runs while its argument says so


WAKE_SECONDS = 300.0  # a waiting candidate looks again this often even unwoken


class Leadership:
    def __init__(self) -> None:
        # Each waiting candidate has its own event, set when it comes to lead: a change
        # of leader wakes one candidate, not all (a daemon per resource: 10,000 of them).
        self._waiting: dict[str, asyncio.Event] = {}
        self._leader: str | None = None
        self._running = asyncio.Lock()  # held by the one loop of this process
        self._closing = False

    async def take_turns(self, uid: str, stopped: Callable[[], bool], loop: Loop) -> None:
        """Run ``loop`` while ``uid`` leads; wait while another does."""
        self._enter(uid)
        try:
            while not stopped() and not self._closing:
                if self._leader == uid:
                    async with self._running:  # the previous leader ends its turn first
                        await loop(lambda: self._leads(uid, stopped))
                else:
                    woken = self._waiting[uid]
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(WAKE_SECONDS):
                            await woken.wait()
                    woken.clear()
        finally:
            self._leave(uid)

    async def close(self, grace_seconds: float) -> None:
        """No more turns; wait (a while) for the running loop to end its turn."""
        self._closing = True
        for woken in self._waiting.values():
            woken.set()  # the waiting candidates return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_seconds), self._running:
                pass

    def _leads(self, uid: str, stopped: Callable[[], bool]) -> bool:
        return self._leader == uid and not stopped() and not self._closing

    def _enter(self, uid: str) -> None:
        self._waiting[uid] = asyncio.Event()
        if self._leader is None or uid < self._leader:
            self._leader = uid  # a former leader sees it and ends its turn

    def _leave(self, uid: str) -> None:
        self._waiting.pop(uid, None)
        if self._leader == uid:
            self._leader = min(self._waiting, default=None)
            if self._leader is not None:
                self._waiting[self._leader].set()
