"""The store's one error boundary: a ledger that cannot serve raises ``LedgerUnavailable``.

The webhook and the operator catch this one exception, never redis-py's or the socket
layer's. What counts as unavailable: no connection, a timeout, and the error replies
that mean "not now" (a read-only replica after a failover, out of memory, still
loading, a cluster that is down or resharding). Any other error reply is a bug in a
script or a key and propagates unchanged, so that it is not mistaken for an outage.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

P = ParamSpec("P")
R = TypeVar("R")

UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,  # BusyLoadingError and MaxConnectionsError included
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    ClusterDownError,
    ClusterError,  # redirections that did not settle (a slot migration, a failover)
    TryAgainError,
    OSError,
    TimeoutError,
)


class LedgerUnavailable(Exception):
    """The ledger could not answer: Redis is unreachable, or stopped answering.

    ``sent`` says whether the command may have reached Redis (and may still run
    there): a reservation that timed out may have landed, one never sent did not.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent

    @classmethod
    def from_error(cls, error: BaseException) -> LedgerUnavailable:
        return cls(f"{type(error).__name__}: {error}", sent=True)


def ledger_call(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Decorate a store coroutine: Redis failures leave it as ``LedgerUnavailable``."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except UNAVAILABLE as error:
            raise LedgerUnavailable.from_error(error) from error

    return call
