"""The webhook process: its two listeners and background work, started and stopped.

- check listener (``webhook.check``): every method and path is an Envoy ext_authz check;
- API listener (``webhook.api``): usage settlement, budgets, health, metrics, OpenAPI;
- background work (``webhook.background``).

``wiring.build_webhook`` makes the parts; this module only runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from budget_guard.webhook.settings import WebhookSettings
from budget_guard.webhook.wiring import Webhook, build_webhook

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running(webhook: Webhook) -> AsyncIterator[tuple[int, int]]:
    """Both listeners and the background work; yields the bound (check, api) ports."""
    listen = webhook.settings.listen
    handler_options: dict[str, Any] = {
        "access_log": None,
        "keepalive_timeout": listen.keepalive_seconds,
        "max_line_size": listen.max_header_bytes,
        "max_field_size": listen.max_header_bytes,
    }
    # The check listener reads bodies as Envoy forwarded them (decompressed by us, bounded).
    check_server = webhook.checks.server(auto_decompress=False, **handler_options)
    check_runner = web.ServerRunner(check_server, handle_signals=False)
    api_app = webhook.api.app(listen.max_body_bytes)
    api_runner = web.AppRunner(api_app, handle_signals=False, **handler_options)
    async with aiohttp.ClientSession() as session:
        await webhook.background.start(session)
        await check_runner.setup()
        await api_runner.setup()
        try:
            await web.TCPSite(check_runner, listen.host, listen.check_port).start()
            await web.TCPSite(api_runner, listen.host, listen.api_port).start()
            yield _bound_port(check_runner), _bound_port(api_runner)
        finally:
            await check_runner.cleanup()
            await api_runner.cleanup()
            await webhook.background.stop()
            await webhook.ledger.close(webhook.clock())


def _bound_port(runner: web.BaseRunner) -> int:
    server = runner.addresses[0]
    return int(server[1])


async def serve(settings: WebhookSettings) -> None:
    webhook = build_webhook(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(webhook) as (check_port, api_port):
        # Everything loaded so far (tokenizer vocabularies, config) lives as long as the
        # process: keep it out of the garbage collector's scans, which would otherwise
        # walk it on every full collection and show up in the decision latency.
        gc.freeze()
        log.info(
            "webhook listening: checks on %s:%d, API on %s:%d",
            settings.listen.host,
            check_port,
            settings.listen.host,
            api_port,
            extra={"check_port": check_port, "api_port": api_port},
        )
        await stop.wait()
        log.info("webhook stopping")
