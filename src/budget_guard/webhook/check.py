"""The check listener: every method and path is an Envoy ext_authz check.

It runs on aiohttp's low-level server: every request is a check, so the application
layer (router, middlewares, signals) would only add work per request. A check is
taken on (``admission``), its body read, decided (``decide.Decider``), counted and
answered; nothing else happens here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from budget_guard.domain.endpoints import api_of
from budget_guard.domain.request_ids import request_id_for
from budget_guard.webhook.admission import Admission
from budget_guard.webhook.decide import CheckRequest, Decider
from budget_guard.webhook.dialects import for_client
from budget_guard.webhook.metrics import Metrics
from budget_guard.webhook.responses import (
    LEDGER_FAILURE_REASONS,
    CheckAnswer,
    error_answer,
    overloaded_answer,
)
from budget_guard.webhook.settings import ListenSettings

# A body that stops arriving for --gateway-timeout-ms is not awaited further (Envoy has
# given up on the check by then): a client announcing more than it sends must not hold
# a slot of --max-inflight-decisions. At least a second, so that a loaded host never
# turns a real check into this error.
_MIN_BODY_STALL_MS = 1000


def _too_large(limit: int) -> CheckAnswer:
    return error_answer(
        413, "body_too_large", f"the body exceeds {limit} bytes, the most that is checked"
    )


def strip_prefix(path: str, prefix: str) -> str:
    """The client's path, without the prefix Envoy's ``path_prefix`` put before it."""
    if prefix and path.startswith(prefix):
        return path[len(prefix) :] or "/"
    return path


@dataclass
class CheckService:
    decider: Decider
    admission: Admission
    metrics: Metrics
    listen: ListenSettings

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = strip_prefix(request.path_qs, self.listen.path_prefix)
        answer = await self.check(
            request.headers, path, lambda started: self._read(request, path, started)
        )
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def check(
        self,
        headers: Mapping[str, str],
        path: str,
        read: Callable[[float], Awaitable[CheckRequest | CheckAnswer]],
    ) -> CheckAnswer:
        """One check, whichever listener took it (HTTP here, gRPC in ``ext_proc``):
        taken on or turned away, its request read (``read(arrival)``), decided, counted,
        and a deny put in the words of the client's API (``dialects``)."""
        started = time.perf_counter()
        if not self.admission.enter():
            request_id = request_id_for(headers.get("x-request-id"))
            answer = overloaded_answer(request_id, "too many checks in flight")
        else:
            try:
                request = await read(started)
                if isinstance(request, CheckAnswer):
                    answer = request
                else:
                    answer = await self.decider.decide(request)
            finally:
                self.admission.leave()
        self._count(answer, time.perf_counter() - started)
        return for_client(answer, api_of(path))

    async def _read(
        self, request: web.BaseRequest, path: str, started: float
    ) -> CheckRequest | CheckAnswer:
        limit = self.listen.max_body_bytes
        content = request.content
        if content.is_eof():  # the usual case: the whole body came with the headers
            body = content.read_nowait()  # no timer and no await: a tenth of a check's time
        else:
            arrived = await self._read_slowly(content, limit)
            if isinstance(arrived, CheckAnswer):
                return arrived
            body = arrived
        if len(body) > limit:
            return _too_large(limit)
        return CheckRequest(request.method, path, request.headers, body, started)

    async def _read_slowly(self, content: StreamReader, limit: int) -> bytes | CheckAnswer:
        stall_ms = max(self.listen.gateway_timeout_ms, _MIN_BODY_STALL_MS)
        body = bytearray()
        try:
            while True:
                async with asyncio.timeout(stall_ms / 1000):
                    chunk = await content.readany()
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > limit:
                    return _too_large(limit)
        except (TimeoutError, ConnectionError):  # a content-length longer than the body
            return error_answer(
                400,
                "incomplete_body",
                f"the connection ended, or sent nothing for {stall_ms} ms, before the body "
                "its content-length announces arrived",
            )

    def _count(self, answer: CheckAnswer, seconds: float) -> None:
        metrics = self.metrics
        metrics.count_decision(answer.decision, answer.reason, seconds)
        if answer.reason in LEDGER_FAILURE_REASONS:
            metrics.ledger_errors.labels("reserve").inc()
            if answer.decision == "allow":
                metrics.fail_open.inc()

    def server(self, **handler_options: Any) -> web.Server:
        """The listener's aiohttp server; bodies up to ``--max-body-bytes``."""
        max_body_bytes = self.listen.max_body_bytes

        def make_request(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> web.BaseRequest:
            loop = asyncio.get_running_loop()
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=max_body_bytes
            )

        return web.Server(self.handle, request_factory=make_request, **handler_options)
