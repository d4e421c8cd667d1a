"""Waiting in tests: on a condition or a counter, never on the clock alone.

A fixed sleep before an assert either wastes time or, on a loaded 2-core CI machine,
is too short. ``eventually`` polls what the test cares about until it holds.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    check: Callable[[T], bool] = bool,
    *,
    within: float = 20.0,
    every: float = 0.05,
    what: str = "",
) -> T:
    """Poll ``probe`` (a function or a coroutine function) until ``check`` holds on
    what it returns; return that value, or fail naming ``what`` and the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        seen = cast(T, value)
        if check(seen):
            return seen
        if loop.time() > deadline:
            raise AssertionError(f"not within {within}s: {what or check}; last seen: {seen!r}")
        await asyncio.sleep(every)
