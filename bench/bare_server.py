"""The floor for the webhook benchmark: an aiohttp handler that reads the body and
answers 200, with the same server options as the webhook's check listener."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def allow(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200)


async def serve() -> None:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", allow)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=620.0, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))  # type: ignore[func-returns-value]
