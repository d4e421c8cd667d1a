"""The Go envoy-driver (built by make test) speaks to a Python gRPC server.

The stubs below are written with Envoy's published Python protos (xds-protos), so this
proves the two generated stacks agree on the wire and that the fixture parses the
driver's report. The real ext_proc and ext_authz services are tested the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from tests.fixtures.envoy_driver import EnvoyDriver, exchange, header

SSE = (
    'data: {"choices":[{"delta":{"content":"Grüße, 世界"}}]}\n\n'
    'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}\n\n'
    "data: [DONE]\n\n"
)


def _set_header(name: str, value: str) -> base_pb2.HeaderValueOption:
    # Envoy reads raw_value in ext_proc mutations; value alone would set an empty header.
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, raw_value=value.encode())
    )


class StubProcessor(ext_proc_grpc.ExternalProcessorServicer):
    """Rewrites the request body's model (fixing content-length) and echoes response chunks."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    async def Process(  # noqa: N802 (the gRPC method's name)
        self, request_iterator: AsyncIterator[ext_proc.ProcessingRequest], context: Any
    ) -> AsyncIterator[ext_proc.ProcessingResponse]:
        async for message in request_iterator:
            yield self._answer(message)

    def _answer(self, message: ext_proc.ProcessingRequest) -> ext_proc.ProcessingResponse:
        kind = message.WhichOneof("request")
        if kind == "request_headers":
            headers = {h.key: h.raw_value.decode() for h in message.request_headers.headers.headers}
            self.request_ids.append(headers["x-budget-request-id"])
            return ext_proc.ProcessingResponse(request_headers=ext_proc.HeadersResponse())
        if kind == "request_body":
            body = json.loads(message.request_body.body)
            body["model"] = "gpt-4o-mini"
            new_body = json.dumps(body, separators=(",", ":")).encode()
            common = ext_proc.CommonResponse(
                header_mutation=ext_proc.HeaderMutation(
                    set_headers=[_set_header("content-length", str(len(new_body)))]
                ),
                body_mutation=ext_proc.BodyMutation(body=new_body),
            )
            return ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse(response=common))
        if kind == "response_headers":
            return ext_proc.ProcessingResponse(response_headers=ext_proc.HeadersResponse())
        chunk = message.response_body.body
        echo = ext_proc.CommonResponse(body_mutation=ext_proc.BodyMutation(body=chunk))
        return ext_proc.ProcessingResponse(response_body=ext_proc.BodyResponse(response=echo))


class StubAuthorizer(external_auth_pb2_grpc.AuthorizationServicer):
    """Allows every request, adding a header for the upstream and dynamic metadata."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def Check(  # noqa: N802
        self, request: external_auth_pb2.CheckRequest, context: Any
    ) -> external_auth_pb2.CheckResponse:
        self.paths.append(request.attributes.request.http.path)
        metadata = struct_pb2.Struct()
        metadata.update({"budget": "team-a", "estimate_usd": 0.002})
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=0),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key="x-budget-request-id", value="r-auth")
                    )
                ]
            ),
            dynamic_metadata=metadata,
        )


@pytest.fixture
async def stub_target() -> AsyncIterator[tuple[str, StubProcessor, StubAuthorizer]]:
    server = grpc.aio.server()
    processor, authorizer = StubProcessor(), StubAuthorizer()
    ext_proc_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authorizer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", processor, authorizer
    finally:
        await server.stop(grace=None)


async def test_driver_replays_a_streamed_exchange_against_a_python_processor(
    envoy_driver: EnvoyDriver, stub_target: tuple[str, StubProcessor, StubAuthorizer]
) -> None:
    target, processor, _ = stub_target
    scenario = exchange(
        "chat-stream",
        request_body={"model": "gpt-4o", "stream": True},
        request_headers={"x-budget-request-id": "r-1"},
        response_body=SSE,
        response_headers={"content-type": "text/event-stream"},
        split={"chunks": 6},
    )
    report = await envoy_driver.ext_proc(target, [scenario], seed=12)
    result = report.exchanges[0]

    assert result.errors == [], result.errors
    assert (
        result.sent_kinds
        == ["request_headers", "request_body", "response_headers"] + ["response_body"] * 6
    )
    assert result.received_kinds == result.sent_kinds
    assert processor.request_ids == ["r-1"]
    assert json.loads(result.upstream.body.data) == {"model": "gpt-4o-mini", "stream": True}
    assert header(result.upstream.headers, "content-length") == str(len(result.upstream.body.data))
    # Split at random points (inside UTF-8 sequences too), echoed chunk by chunk: the client
    # gets exactly the upstream's bytes, in the same six pieces.
    assert result.client.body.text == SSE
    assert [len(chunk.data) for chunk in result.client.chunks] == result.response_chunk_sizes
    assert any(chunk.text is None for chunk in result.client.chunks)
    assert result.stream.end == "closed"


async def test_driver_checks_against_a_python_authorizer(
    envoy_driver: EnvoyDriver, stub_target: tuple[str, StubProcessor, StubAuthorizer]
) -> None:
    target, _, authorizer = stub_target
    check = {"path": "/v1/chat/completions?trace=1", "headers": {"authorization": "Bearer t"}}
    report = await envoy_driver.ext_authz(target, [check])
    summary = report.checks[0].summary

    assert report.checks[0].errors == []
    assert summary is not None
    assert summary.allowed
    assert summary.kind == "ok_response"
    assert [(h.name, h.value) for h in summary.upstream_headers] == [
        ("x-budget-request-id", "r-auth")
    ]
    assert summary.dynamic_metadata == {"budget": "team-a", "estimate_usd": 0.002}
    assert authorizer.paths == ["/v1/chat/completions?trace=1"]
