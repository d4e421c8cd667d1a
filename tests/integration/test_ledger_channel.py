"""The decision path's pipelined Redis connection (store.channel), on a real redis-server:
many callers share one write, each gets its own reply, and Redis's health is judged on
the connection: a busy event loop is not a slow Redis, a paused or dead one is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from budget_guard.localservices import RedisServer
from budget_guard.store.channel import ChannelSettings, LedgerChannel
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.scripts import LuaScript, bulk
from tests.waiting import eventually

pytestmark = pytest.mark.redis

STALL = 0.05


def command(*parts: str) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(bulk(part) for part in parts)


async def open_channel(url: str, stall: float = STALL) -> tuple[Redis, LedgerChannel]:
    client = Redis.from_url(
        url, socket_connect_timeout=0.2, socket_timeout=None, retry=Retry(NoBackoff(), 0)
    )
    settings = ChannelSettings(stall_timeout_seconds=stall, connect_timeout_seconds=0.2)
    channel = LedgerChannel(client.connection_pool, settings)
    assert await channel.start()
    return client, channel


async def until_available(channel: LedgerChannel) -> None:
    await eventually(lambda: channel.healthy, within=5, what="the channel reconnects")


@pytest.fixture
async def channel(redis_server: RedisServer) -> AsyncIterator[LedgerChannel]:
    client, opened = await open_channel(redis_server.url)
    try:
        yield opened
    finally:
        await opened.aclose()
        await client.aclose()


async def test_concurrent_callers_share_writes_and_each_gets_its_own_reply(
    channel: LedgerChannel,
) -> None:
    replies = await asyncio.gather(*(channel.call(command("ECHO", f"m{i}")) for i in range(500)))
    assert replies == [f"m{i}".encode() for i in range(500)]
    assert channel.commands == 500
    assert channel.batches <= 3  # one write per loop turn, not one per caller


async def test_an_error_reply_goes_to_its_caller_and_the_connection_stays(
    channel: LedgerChannel,
) -> None:
    good, bad, after = await asyncio.gather(
        channel.call(command("ECHO", "a")),
        channel.call(command("NOSUCHCOMMAND")),
        channel.call(command("ECHO", "b")),
        return_exceptions=True,
    )
    assert (good, after) == (b"a", b"b")
    assert isinstance(bad, ResponseError)
    assert channel.healthy and channel.outages == 0


async def test_a_busy_event_loop_is_not_a_slow_redis(channel: LedgerChannel) -> None:
    await channel.call(command("PING"))  # connected
    pending = channel.call(command("ECHO", "late-read"))
    await asyncio.sleep(0)  # written
    time.sleep(6 * STALL)  # noqa: ASYNC251 - the loop is blocked far past the stall timeout
    assert await pending == b"late-read"
    assert channel.healthy and channel.stalls == 0


async def test_a_paused_redis_is_stalled_then_calls_fail_fast_until_it_is_back() -> None:
    with RedisServer() as redis:
        client, channel = await open_channel(redis.url)
        try:
            await channel.call(command("PING"))
            redis.pause()
            try:
                started = time.monotonic()
                with pytest.raises(LedgerUnavailable) as stalled:
                    await channel.call(command("PING"))
                assert stalled.value.sent  # it may still run when Redis wakes up
                assert time.monotonic() - started < 10 * STALL
                refused_at = time.monotonic()
                with pytest.raises(LedgerUnavailable) as refused:
                    await channel.call(command("PING"))  # while reconnecting: at once
                assert not refused.value.sent
                assert time.monotonic() - refused_at < STALL
                assert (channel.stalls, channel.outages, channel.healthy) == (1, 1, False)
            finally:
                redis.resume()
            await until_available(channel)
            assert await channel.call(command("ECHO", "back")) == b"back"
            assert channel.healthy
        finally:
            await channel.aclose()
            await client.aclose()


async def test_a_dead_redis_fails_calls_and_a_restarted_one_is_used_again() -> None:
    with RedisServer() as redis:
        client, channel = await open_channel(redis.url)
        try:
            await channel.call(command("PING"))
            port = redis.port
            redis.stop_process()
            with pytest.raises(LedgerUnavailable):
                await channel.call(command("PING"))
            redis.start(port)
            await until_available(channel)
            assert await channel.call(command("ECHO", "again")) == b"again"
            assert channel.healthy and channel.outages == 1
        finally:
            await channel.aclose()
            await client.aclose()


async def test_scripts_are_loaded_again_after_a_script_flush(
    channel: LedgerChannel, redis_client: Redis
) -> None:
    script = LuaScript("probe", "return ARGV[1]")
    call = script.command(0, 1, bulk("x"))
    await redis_client.script_flush()
    assert await script.call(channel, call) == b"x"  # NOSCRIPT, SCRIPT LOAD, again
    assert await script.call(channel, call) == b"x"
