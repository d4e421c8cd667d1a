"""The webhook process: its listeners and background work, started and stopped.

- check listener (``webhook.check``): every method and path is an Envoy ext_authz check;
- API listener (``webhook.api``): usage settlement, budgets, health, metrics, OpenAPI;
- gRPC listener (``webhook.ext_proc``, unless ``--ext-proc-port 0``): Envoy ext_proc,
  which settles each call from the provider's answer, and gRPC ext_authz;
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
from typing import Any, NamedTuple

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from budget_guard.webhook.ext_proc import grpc_server
from budget_guard.webhook.settings import WebhookSettings
from budget_guard.webhook.wiring import Webhook, build_webhook

log = logging.getLogger(__name__)

GRPC_GRACE_SECONDS = 5.0  # streams in progress get this long to end at shutdown


class Ports(NamedTuple):
    check: int
    api: int
    ext_proc: int  # 0 when the gRPC listener is off


@contextlib.asynccontextmanager
async def running(webhook: Webhook) -> AsyncIterator[Ports]:
    """The listeners and the background work; yields the bound ports."""
    listen = webhook.settings.listen
    handler_options: dict[str, Any] = {
        "access_log": None,
        "keepalive_timeout": listen.keepalive_seconds,
        "max_line_size": listen.max_header_bytes,
        "max_field_size": listen.max_header_bytes,
        "logger": ClientErrorLog(logging.getLogger("aiohttp.server")),
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
        grpc_listener = None
        try:
            await web.TCPSite(check_runner, listen.host, listen.check_port).start()
            await web.TCPSite(api_runner, listen.host, listen.api_port).start()
            ext_proc_port = 0
            if listen.ext_proc_port:
                grpc_listener = grpc_server(webhook.ext_proc, webhook.authorization)
                ext_proc_port = grpc_listener.add_insecure_port(
                    f"{_grpc_host(listen.host)}:{listen.ext_proc_port}"
                )
                await grpc_listener.start()
            yield Ports(_bound_port(check_runner), _bound_port(api_runner), ext_proc_port)
        finally:
            if grpc_listener is not None:
                await grpc_listener.stop(GRPC_GRACE_SECONDS)
            await check_runner.cleanup()
            await api_runner.cleanup()
            await webhook.settler.stop()
            await webhook.background.stop()
            await webhook.ledger.close(webhook.clock())


class ClientErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, minus its traceback for a malformed request (answered 400):
    a client's mistake, and the traceback would quote the request's bytes (a prompt, a
    token) into the log. One warning line names the error's kind instead."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            kind = type(error).__name__
            quiet = min(level, logging.WARNING)
            super().log(quiet, f"{msg}: malformed request ({kind})", *args)
            return
        super().log(level, msg, *args, **kwargs)


def _grpc_host(host: str) -> str:
    """gRPC wants IPv6 literals in brackets; "0.0.0.0" and "::" both mean every address."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - the listen address, not a choice here
        return "[::]"
    return f"[{host}]" if ":" in host else host


def _bound_port(runner: web.BaseRunner) -> int:
    server = runner.addresses[0]
    return int(server[1])


async def serve(settings: WebhookSettings) -> None:
    webhook = build_webhook(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(webhook) as ports:
        # Everything loaded so far (tokenizer vocabularies, config) lives as long as the
        # process: keep it out of the garbage collector's scans, which would otherwise
        # walk it on every full collection and show up in the decision latency.
        gc.freeze()
        log.info(
            "webhook listening on %s: checks on %d, API on %d, ext_proc and gRPC ext_authz %s",
            settings.listen.host,
            ports.check,
            ports.api,
            f"on {ports.ext_proc}" if ports.ext_proc else "off",
            extra={f"{name}_port": port for name, port in ports._asdict().items()},
        )
        await stop.wait()
        log.info("webhook stopping")
