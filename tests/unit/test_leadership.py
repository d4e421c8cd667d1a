"""One loop per replica: the smallest candidate leads, the next takes over, never two."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from budget_guard.operator.leadership import Leadership, Loop
from tests.waiting import eventually


class Daemons:
    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership
        self.stopped: dict[str, bool] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.running: list[str] = []
        self.most_at_once = 0
        self.led: list[str] = []

    def start(self, uid: str) -> None:
        self.stopped[uid] = False
        self.tasks[uid] = asyncio.create_task(
            self.leadership.take_turns(uid, lambda: self.stopped[uid], self._loop(uid))
        )

    def _loop(self, uid: str) -> Loop:
        async def loop(still_leading: Callable[[], bool]) -> None:
            self.running.append(uid)
            self.led.append(uid)
            self.most_at_once = max(self.most_at_once, len(self.running))
            try:
                while still_leading():  # noqa: ASYNC110 - turns, as the real loop takes
                    await asyncio.sleep(0.01)
            finally:
                self.running.remove(uid)

        return loop

    async def stop(self, uid: str) -> None:
        self.stopped[uid] = True
        await asyncio.wait_for(self.tasks[uid], timeout=40)


async def leading(daemons: Daemons, uid: str) -> None:
    await eventually(lambda: daemons.running, lambda running: running == [uid], within=5)


async def test_the_smallest_leads_and_the_next_takes_over() -> None:
    daemons = Daemons(Leadership())
    daemons.start("c")
    await leading(daemons, "c")
    daemons.start("a")  # smaller: takes over from c
    daemons.start("b")
    await leading(daemons, "a")
    await daemons.stop("a")
    await leading(daemons, "b")
    await daemons.stop("b")
    await leading(daemons, "c")
    await daemons.stop("c")
    assert daemons.led == ["c", "a", "b", "c"]
    assert daemons.most_at_once == 1


async def test_closing_ends_every_turn() -> None:
    leadership = Leadership()
    daemons = Daemons(leadership)
    for uid in ("a", "b"):
        daemons.start(uid)
    await leading(daemons, "a")
    await leadership.close(grace_seconds=1)
    assert daemons.running == []
    # every daemon returns, the waiting one too: no more turns
    await asyncio.wait_for(asyncio.gather(*daemons.tasks.values()), timeout=1)
