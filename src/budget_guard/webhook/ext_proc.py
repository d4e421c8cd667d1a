"""The gRPC listener's two Envoy services, on one port (``--ext-proc-port``):

- ``envoy.service.ext_proc.v3.ExternalProcessor/Process``: one stream per HTTP call;
  each of Envoy's messages goes to a ``gateway.GatewayCall`` and its answer back. When
  the answer is over, or the stream ends early (the client went away, the upstream
  reset), the call is settled in the background, so the client's last chunk never
  waits for Redis.
- ``envoy.service.auth.v3.Authorization/Check``: the same decisions as the HTTP check
  listener (``check.CheckService``), with ``dynamic_metadata`` for Envoy's access logs.

Messages are Envoy's own generated classes (the ``xds-protos`` package); this module
only translates between them and the gateway's plain values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3.external_auth_pb2_grpc import (
    AuthorizationServicer,
    add_AuthorizationServicer_to_server,
)
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3.external_processor_pb2_grpc import (
    ExternalProcessorServicer,
    add_ExternalProcessorServicer_to_server,
)
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2, status_pb2

from budget_guard.webhook.check import CheckService
from budget_guard.webhook.decide import CheckRequest
from budget_guard.webhook.gateway import (
    BodyEdit,
    CallEnd,
    GatewayCall,
    GatewayTools,
    HeaderEdits,
)
from budget_guard.webhook.metrics import Metrics
from budget_guard.webhook.responses import HEADER_REMOVE, CheckAnswer
from budget_guard.webhook.settlement import SettlementService, Source

log = logging.getLogger(__name__)

_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
STOP_TIMEOUT_SECONDS = 5.0


def _headers_of(header_map: HeaderMap) -> dict[str, str]:
    """Envoy sends each value in ``raw_value`` (bytes); older versions in ``value``."""
    headers: dict[str, str] = {}
    for header in header_map.headers:
        value = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        headers.setdefault(header.key.lower(), value)
    return headers


def _mutation(edits: HeaderEdits) -> ext_proc.CommonResponse:
    response = ext_proc.CommonResponse()
    for name, value in edits.set:
        response.header_mutation.set_headers.append(
            HeaderValueOption(
                header=HeaderValue(key=name, raw_value=value.encode()), append_action=_OVERWRITE
            )
        )
    response.header_mutation.remove_headers.extend(edits.remove)
    return response


class Settler:
    """Settles ended calls in the background, each once; waited for at shutdown."""

    def __init__(self, settlement: SettlementService, metrics: Metrics) -> None:
        self._settlement = settlement
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def settle(self, call: GatewayCall) -> None:
        ended = call.end()
        if call.api is not None and call.unreadable_usage and ended is not None:
            self._metrics.usage_parse_failures.labels(shape=call.api.value).inc()
        for problem in call.problems:
            log.warning("ext_proc could not settle a call: %s", problem)
        call.problems.clear()
        if ended is None:
            return
        if ended.early:
            self._metrics.streams_ended_early.labels(shape=ended.api.value).inc()
        task = asyncio.get_running_loop().create_task(self._settle(ended))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _settle(self, ended: CallEnd) -> None:
        cost = ended.price.cost_micros(ended.usage)
        result = await self._settlement.settle_call(
            ended.request_id, cost, ended.model, Source.EXT_PROC
        )
        outcome = result.body["status"]
        if outcome not in ("settled", "already_settled", "accepted"):
            log.warning(
                "ext_proc settlement of %s: %s (%s)",
                ended.request_id,
                outcome,
                result.body.get("message", ""),
                extra={"request_id": ended.request_id, "cost_micros": cost},
            )

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("settlement failed", exc_info=task.exception())

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_TIMEOUT_SECONDS)


class ExtProcService(ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, tools: GatewayTools, settler: Settler, metrics: Metrics) -> None:
        self._tools = tools
        self._settler = settler
        self._metrics = metrics

    async def Process(  # noqa: N802 - the gRPC method's name
        self, requests: AsyncIterator[ext_proc.ProcessingRequest], context: Any
    ) -> AsyncIterator[ext_proc.ProcessingResponse]:
        call = GatewayCall(self._tools)
        started = time.perf_counter()
        try:
            async for message in requests:
                answer = self._answer(call, message)
                if call.answer_ended:
                    self._settler.settle(call)
                if not message.observability_mode:
                    yield answer
        finally:
            self._settler.settle(call)  # early: what was seen (nothing, if settled above)
            if call.priced:
                self._metrics.ext_proc_stream_seconds.observe(time.perf_counter() - started)

    def _answer(
        self, call: GatewayCall, message: ext_proc.ProcessingRequest
    ) -> ext_proc.ProcessingResponse:
        kind = message.WhichOneof("request")
        if kind == "request_headers":
            edits = call.on_request_headers(_headers_of(message.request_headers.headers))
            return ext_proc.ProcessingResponse(
                request_headers=ext_proc.HeadersResponse(response=_mutation(edits))
            )
        if kind == "request_body":
            body = message.request_body
            edit = call.on_request_body(body.body, body.end_of_stream)
            return ext_proc.ProcessingResponse(request_body=_body_response(edit))
        if kind == "response_headers":
            headers = message.response_headers
            edits = call.on_response_headers(_headers_of(headers.headers), headers.end_of_stream)
            return ext_proc.ProcessingResponse(
                response_headers=ext_proc.HeadersResponse(response=_mutation(edits))
            )
        if kind == "response_body":
            body = message.response_body
            replaced = call.on_response_body(body.body, body.end_of_stream)
            edit = BodyEdit(replaced, HeaderEdits()) if replaced is not None else None
            return ext_proc.ProcessingResponse(response_body=_body_response(edit))
        if kind == "request_trailers":
            return ext_proc.ProcessingResponse(request_trailers=ext_proc.TrailersResponse())
        call.on_response_trailers()
        return ext_proc.ProcessingResponse(response_trailers=ext_proc.TrailersResponse())


def _body_response(edit: BodyEdit | None) -> ext_proc.BodyResponse:
    if edit is None:
        return ext_proc.BodyResponse()
    response = _mutation(edit.headers)
    response.body_mutation.body = edit.body
    return ext_proc.BodyResponse(response=response)


class AuthorizationService(AuthorizationServicer):  # type: ignore[misc]
    """gRPC ext_authz: the HTTP check's decisions, Envoy's gRPC answer shapes."""

    def __init__(self, checks: CheckService) -> None:
        self._checks = checks

    async def Check(  # noqa: N802 - the gRPC method's name
        self, request: authz.CheckRequest, context: Any
    ) -> authz.CheckResponse:
        http = request.attributes.request.http
        headers = dict(http.headers) or _headers_of(http.header_map)

        async def check_request(arrived: float) -> CheckRequest:
            body = http.raw_body or http.body.encode()
            return CheckRequest(http.method, http.path, headers, body, arrived)

        answer = await self._checks.check(headers, http.path, check_request)
        return _check_response(answer)


def _check_response(answer: CheckAnswer) -> authz.CheckResponse:
    metadata = Struct()
    metadata.update(_access_log_fields(answer))
    if answer.status == 200:
        removed = answer.headers.get(HEADER_REMOVE, "")
        ok = authz.OkHttpResponse(
            headers=[
                _header(name, value)
                for name, value in answer.headers.items()
                if name != HEADER_REMOVE
            ],
            headers_to_remove=[name for name in removed.split(",") if name],
        )
        return authz.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK), ok_response=ok, dynamic_metadata=metadata
        )
    denied = authz.DeniedHttpResponse(
        headers=[_header(name, value) for name, value in answer.headers.items()],
        body=answer.body.decode(),
    )
    denied.status.code = answer.status  # Envoy's status codes are HTTP's
    return authz.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=answer.reason),
        denied_response=denied,
        dynamic_metadata=metadata,
    )


def _header(name: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=_OVERWRITE)


def _access_log_fields(answer: CheckAnswer) -> Mapping[str, str]:
    """The decision and its ``x-budget-*`` headers: ``request_id``,
    ``estimated_cost_usd``, ``budget`` (the denying one, or the one with least room),
    ``remaining_usd``, ``model_override``..."""
    fields = {"decision": answer.decision, "reason": answer.reason}
    for name, value in answer.headers.items():
        if name.startswith("x-budget-"):
            key = name.removeprefix("x-budget-").replace("-", "_")
            fields["budget" if key == "name" else key] = value
    return fields


# Envoy sends a BUFFERED body in one message, as large as its buffer limit allows;
# gRPC's default (4 MiB) would fail the stream on a large request (images inline).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def grpc_server(
    ext_proc_service: ExtProcService, authorization: AuthorizationService
) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    add_ExternalProcessorServicer_to_server(ext_proc_service, server)
    add_AuthorizationServicer_to_server(authorization, server)
    return server
