"""The Lua scripts of ``store/lua/``, and the lean way the hot path calls them.

Every script gets ``_shared.lua`` prepended, so it runs self-contained on the
server while its helpers are written once. Calls are sent as pre-encoded RESP:
the parts of a command that repeat from request to request are encoded once by
the caller, which keeps client-side work per decision to a few microseconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from budget_guard.store.channel import LedgerChannel

_SHARED = "_shared.lua"


def _read(name: str) -> str:
    return resources.files("budget_guard.store").joinpath("lua", name).read_text()


def bulk(value: bytes | str | int) -> bytes:
    """One RESP bulk string."""
    if isinstance(value, int):
        value = str(value).encode()
    elif isinstance(value, str):
        value = value.encode()
    return b"$%d\r\n%b\r\n" % (len(value), value)


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: str
    sha: str = field(init=False)
    _evalsha: bytes = field(init=False, repr=False)
    load_command: bytes = field(init=False, repr=False)  # SCRIPT LOAD, pre-encoded

    def __post_init__(self) -> None:
        sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", sha)
        object.__setattr__(self, "_evalsha", bulk("EVALSHA") + bulk(sha))
        load = b"*3\r\n" + bulk("SCRIPT") + bulk("LOAD") + bulk(self.source)
        object.__setattr__(self, "load_command", load)

    @classmethod
    def load(cls, name: str) -> LuaScript:
        return cls(name, _read(_SHARED) + "\n" + _read(name))

    def command(self, key_count: int, arg_count: int, *encoded: bytes) -> bytes:
        """The EVALSHA command; ``encoded`` holds the keys then the arguments, each
        already ``bulk``-encoded (a piece may hold several)."""
        header = b"*%d\r\n" % (3 + key_count + arg_count)
        return b"".join((header, self._evalsha, bulk(key_count), *encoded))

    async def call(self, target: Redis | LedgerChannel, command: bytes) -> Any:
        """Send a ``command``; load the script and retry once if the server lacks it.

        Through a ``LedgerChannel``, the command is pipelined with other callers';
        through a client, it takes a pooled connection for its round trip."""
        if isinstance(target, LedgerChannel):
            try:
                return await target.call(command)
            except NoScriptError:
                await target.call(self.load_command)
                return await target.call(command)
        try:
            return await _roundtrip(target, command)
        except NoScriptError:
            await target.script_load(self.source)
            return await _roundtrip(target, command)

    async def call_all(self, client: Redis, commands: Sequence[bytes]) -> list[Any]:
        """Send ``commands`` in one write and read their replies in order; load the
        script and retry once if the server lacks it."""
        try:
            return await _roundtrips(client, commands)
        except NoScriptError:
            await client.script_load(self.source)
            return await _roundtrips(client, commands)

    async def run(self, client: Redis | RedisCluster, keys: list[str], args: list[Any]) -> Any:
        """Encode and call (for paths where encoding once does not pay). On Redis
        Cluster, redis-py sends it to the node of the keys' slot (one slot per call)."""
        if isinstance(client, RedisCluster):
            try:
                try:
                    return await client.evalsha(self.sha, len(keys), *keys, *args)
                except NoScriptError:  # a node that never ran it (new, or just promoted)
                    return await client.eval(self.source, len(keys), *keys, *args)
            except AttributeError as error:
                # redis-py 8.1's asyncio RedisCluster, re-learning the cluster after a
                # node failed, closes connections other calls are using; they fail with
                # this. The call may have been sent: an outage, not a bug of ours.
                raise RedisConnectionError(f"connection closed under the call: {error}") from error
        encoded = [bulk(part) for part in (*keys, *args)]
        return await self.call(client, self.command(len(keys), len(args), *encoded))


async def _roundtrips(client: Redis, commands: Sequence[bytes]) -> list[Any]:
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(b"".join(commands), check_health=False)
        replies: list[Any] = []
        failed: ResponseError | None = None
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as error:  # read whole: the next reply follows
                failed = failed or error
        if failed is not None:
            raise failed
        return replies
    except ResponseError:
        raise
    except BaseException:
        await connection.disconnect()  # mid-reply: never reuse it
        raise
    finally:
        await pool.release(connection)


async def _roundtrip(client: Redis, command: bytes) -> Any:
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(command, check_health=False)
        return await connection.read_response()
    except ResponseError:
        raise  # a whole error reply was read: the connection is fine
    except BaseException:
        # A cancelled or failed exchange leaves the connection mid-reply: never reuse it.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


RESERVE = LuaScript.load("reserve.lua")
SETTLE = LuaScript.load("settle.lua")
COMMIT = LuaScript.load("commit.lua")
RELEASE = LuaScript.load("release.lua")
RESTORE = LuaScript.load("restore.lua")
READ_FIELD = LuaScript.load("read_field.lua")
RESTORE_USERS = LuaScript.load("restore_users.lua")
RESTORE_POOL = LuaScript.load("restore_pool.lua")
CANCEL = LuaScript.load("cancel.lua")
FORGET_GRANTS = LuaScript.load("forget_grants.lua")
READ_USAGE = LuaScript.load("read_usage.lua")
