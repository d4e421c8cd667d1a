"""ext_proc benchmark: the webhook's gRPC listener reading a streamed answer chunk by
chunk and settling calls, beside a bare grpc.aio processor that answers the same
messages with empty answers (bench/bare_grpc.py), measured in the same run.

The client plays Envoy's part with Envoy's generated messages: each message waits for
its answer, as Envoy does outside observability mode. Every call the webhook sees was
first reserved by an HTTP check (untimed), so its settlement is a real one.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3.external_processor_pb2_grpc import ExternalProcessorStub

from bench.webhook import IDENTITY, start_floor, webhook_inputs
from budget_guard.localservices import WebhookProcess

STREAM_CHUNKS = 200  # one SSE event per chunk, as providers flush them
STREAMS = 5
CALLS = 4000
CONCURRENCY = 32
ECHO = "bare grpc processor (floor)"
HOOK = "webhook ext_proc"

REQUEST = {
    "model": "gpt-4o-mini",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
}
ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"message": {"role": "assistant", "content": "Once upon a time."}}],
    "usage": {"prompt_tokens": 18, "completion_tokens": 6},
}


def sse_chunks(count: int) -> list[bytes]:
    words = ("the", "keeper", "climbed", "the", "stairs", "as", "the", "fog", "rolled", "in")

    def delta(word: str) -> dict[str, object]:
        return {"id": "c1", "choices": [{"delta": {"content": word + " "}}]}

    chunks = [f"data: {json.dumps(delta(words[i % len(words)]))}\n\n" for i in range(count - 2)]
    usage = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 18, "completion_tokens": 200}}
    chunks += [f"data: {json.dumps(usage)}\n\n", "data: [DONE]\n\n"]
    return [chunk.encode() for chunk in chunks]


def _headers(pairs: dict[str, str]) -> HeaderMap:
    return HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()])


def _messages(
    request_id: str, answer: Sequence[bytes], streamed: bool
) -> list[ext_proc.ProcessingRequest]:
    body = json.dumps(REQUEST if streamed else {**REQUEST, "stream": False}).encode()
    content_type = "text/event-stream" if streamed else "application/json"
    request_headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        "content-type": "application/json",
        "x-budget-request-id": request_id,
        **IDENTITY,
    }
    messages = [
        ext_proc.ProcessingRequest(
            request_headers=ext_proc.HttpHeaders(headers=_headers(request_headers))
        ),
        ext_proc.ProcessingRequest(request_body=ext_proc.HttpBody(body=body, end_of_stream=True)),
        ext_proc.ProcessingRequest(
            response_headers=ext_proc.HttpHeaders(
                headers=_headers({":status": "200", "content-type": content_type})
            )
        ),
    ]
    last = len(answer) - 1
    messages += [
        ext_proc.ProcessingRequest(
            response_body=ext_proc.HttpBody(body=chunk, end_of_stream=index == last)
        )
        for index, chunk in enumerate(answer)
    ]
    return messages


async def one_call(
    stub: ExternalProcessorStub,
    messages: list[ext_proc.ProcessingRequest],
    chunk_ns: list[int] | None = None,
) -> None:
    """Envoy's side of one call: each message, then its answer."""
    call = stub.Process()
    for index, message in enumerate(messages):
        started = time.perf_counter_ns()
        await call.write(message)
        await call.read()
        if chunk_ns is not None and index >= 3:  # the answer's body chunks
            chunk_ns.append(time.perf_counter_ns() - started)
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:
        pass


@dataclass(frozen=True)
class ChunkLatency:
    name: str
    chunks: int
    p50_us: float
    p99_us: float

    def row(self) -> str:
        return f"| {self.name} | {self.chunks:,} | {self.p50_us:.0f} | {self.p99_us:.0f} |"


@dataclass(frozen=True)
class CallRate:
    name: str
    calls: int
    calls_per_second: float
    settlements_per_second: float | None

    def row(self) -> str:
        settled = f"{self.settlements_per_second:,.0f}" if self.settlements_per_second else "-"
        return f"| {self.name} | {self.calls:,} | {self.calls_per_second:,.0f} | {settled} |"


@dataclass(frozen=True)
class ExtProcResults:
    latency: list[ChunkLatency]
    rate: list[CallRate]


def _summary(name: str, samples: list[int]) -> ChunkLatency:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return ChunkLatency(name, len(ordered), statistics.median(ordered) / 1000, p99 / 1000)


async def _reserve(check_url: str, count: int, prefix: str) -> list[str]:
    """Request ids the check reserved, as ext_authz would have before ext_proc."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    body = json.dumps({**REQUEST, "max_tokens": 300})
    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as session:

        async def reserve(request_id: str) -> None:
            headers = {**IDENTITY, "x-request-id": request_id, "content-type": "application/json"}
            async with (
                semaphore,
                session.post(
                    f"{check_url}/v1/chat/completions", data=body, headers=headers
                ) as response,
            ):
                assert response.status == 200, await response.text()

        await asyncio.gather(*(reserve(request_id) for request_id in ids))
    return ids


async def _settled(api_url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{api_url}/metrics") as response:
        text = await response.text()
    found = re.search(
        r'^budget_guard_settlements_total\{source="ext_proc",status="settled"\} ([\d.e+]+)$',
        text,
        re.MULTILINE,
    )
    return int(float(found.group(1))) if found else 0


async def _latency(name: str, target: str, ids: Sequence[str]) -> ChunkLatency:
    samples: list[int] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ExternalProcessorStub(channel)
        await one_call(stub, _messages("warm-up", sse_chunks(20), streamed=True))
        for request_id in ids:
            await one_call(stub, _messages(request_id, sse_chunks(STREAM_CHUNKS), True), samples)
    return _summary(name, samples)


async def _rate(name: str, target: str, ids: Sequence[str]) -> tuple[CallRate, float]:
    answer = [json.dumps(ANSWER).encode()]
    queue = list(ids)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ExternalProcessorStub(channel)

        async def worker() -> None:
            while queue:
                await one_call(stub, _messages(queue.pop(), answer, streamed=False))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        finished = time.perf_counter()
    return CallRate(name, len(ids), len(ids) / (finished - started), None), started


async def _webhook_rate(webhook: WebhookProcess, target: str) -> CallRate:
    ids = await _reserve(webhook.check_url, CALLS, "rate")
    before = await _settled(webhook.api_url)
    rate, started = await _rate(HOOK, target, ids)
    while await _settled(webhook.api_url) < before + CALLS:  # noqa: ASYNC110 - polls a process
        await asyncio.sleep(0.01)
    settled_per_second = CALLS / (time.perf_counter() - started)
    return CallRate(HOOK, CALLS, rate.calls_per_second, settled_per_second)


async def _measure(webhook: WebhookProcess, echo_port: int) -> ExtProcResults:
    hook_target = f"127.0.0.1:{webhook.ext_proc_port}"
    echo_target = f"127.0.0.1:{echo_port}"
    stream_ids = await _reserve(webhook.check_url, STREAMS, "stream")
    latency = [
        await _latency(ECHO, echo_target, stream_ids),
        await _latency(HOOK, hook_target, stream_ids),
    ]
    echo_rate, _ = await _rate(ECHO, echo_target, [f"echo-{i}" for i in range(CALLS)])
    return ExtProcResults(latency, [echo_rate, await _webhook_rate(webhook, hook_target)])


def run(redis_url: str, ext_proc_port: int) -> ExtProcResults:
    with tempfile.TemporaryDirectory(prefix="budget-guard-bench-") as scratch:
        workdir = Path(scratch)
        env = webhook_inputs(workdir)
        args = [
            "--budgets",
            str(workdir / "budgets"),
            "--redis-url",
            redis_url,
            "--ext-proc-port",
            str(ext_proc_port),
        ]
        echo, echo_port = start_floor("bare grpc", "bench.bare_grpc", workdir / "echo.log")
        try:
            with WebhookProcess(args, env=env, workdir=workdir / "webhook") as webhook:
                return asyncio.run(_measure(webhook, echo_port))
        finally:
            echo.stop()
