"""The floor for the ext_proc benchmark: an ExternalProcessor that answers each of
Envoy's messages with the empty answer of its kind (go on, change nothing), on the
same grpc.aio server and generated messages as the webhook's."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3.external_processor_pb2_grpc import (
    ExternalProcessorServicer,
    add_ExternalProcessorServicer_to_server,
)

_ANSWERS = {
    "request_headers": lambda: ext_proc.ProcessingResponse(
        request_headers=ext_proc.HeadersResponse()
    ),
    "request_body": lambda: ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse()),
    "response_headers": lambda: ext_proc.ProcessingResponse(
        response_headers=ext_proc.HeadersResponse()
    ),
    "response_body": lambda: ext_proc.ProcessingResponse(response_body=ext_proc.BodyResponse()),
}


class Echo(ExternalProcessorServicer):  # type: ignore[misc]
    async def Process(  # noqa: N802 - the gRPC method's name
        self, requests: AsyncIterator[ext_proc.ProcessingRequest], context: Any
    ) -> AsyncIterator[ext_proc.ProcessingResponse]:
        async for message in requests:
            yield _ANSWERS[message.WhichOneof("request")]()


async def serve() -> None:
    server = grpc.aio.server()
    add_ExternalProcessorServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))  # type: ignore[func-returns-value]
