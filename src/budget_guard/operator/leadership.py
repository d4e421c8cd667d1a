"""Which of a replica's daemons runs the operator's loop.

Kopf runs a daemon per resource and stops them all in a replica that peering pauses.
Each daemon is a candidate; the one with the smallest uid leads (runs the loop) and
the others wait, waking when the leader changes. So the loop runs exactly while the
replica is active and has at least one resource, with no lock outside the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Loop = Callable[[Callable[[], bool]], Awaitable[None]]  # runs while its argument says so


class Leadership:
    def __init__(self) -> None:
        self._candidates: set[str] = set()
        self._leader: str | None = None
        self._changed = asyncio.Event()
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
                    changed = self._changed
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), timeout=30)
        finally:
            self._leave(uid)

    async def close(self, grace_seconds: float) -> None:
        """No more turns; wait (a while) for the running loop to end its turn."""
        self._closing = True
        self._changed.set()  # the waiting candidates return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_seconds), self._running:
                pass

    def _leads(self, uid: str, stopped: Callable[[], bool]) -> bool:
        return self._leader == uid and not stopped() and not self._closing

    def _enter(self, uid: str) -> None:
        self._candidates.add(uid)
        if self._leader is None or uid < self._leader:
            self._set_leader(uid)

    def _leave(self, uid: str) -> None:
        self._candidates.discard(uid)
        if self._leader == uid:
            self._set_leader(min(self._candidates, default=None))

    def _set_leader(self, uid: str | None) -> None:
        self._leader = uid
        self._changed.set()  # wakes every waiting candidate once
        self._changed = asyncio.Event()
