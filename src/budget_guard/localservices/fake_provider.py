"""A local stand-in for the OpenAI and Anthropic APIs, for the client's tests and its
benchmark: the official SDKs are pointed at it by base URL.

It answers ``POST /v1/chat/completions``, ``/v1/responses`` and ``/v1/messages`` as
those APIs do, plain or streamed (server-sent events), always with the same words and
the same usage numbers (``FakeUsage``), so a test knows what each call cost. A request
header ``x-fake`` asks for something else: ``fail`` (a 400 error), ``tools`` (a chat
answer that calls a tool), ``no-usage`` (no usage anywhere), ``cut`` (a stream broken
off after its first words). It runs on an event loop of its own, on a thread, so that
sync SDK clients can call it from the test's thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

WORDS = (" The", " cat", " sat", " on", " the", " mat", ".")
CUT_AFTER = 3  # words sent before a "cut" stream breaks off


@dataclass(frozen=True)
class FakeUsage:
    """What every call reports (Anthropic counts cache reads and writes apart from
    input; OpenAI counts cached tokens inside the prompt)."""

    input_tokens: int = 1_200
    cached_input_tokens: int = 200
    cache_write_tokens: int = 100
    output_tokens: int = 310

    def openai_chat(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_input_tokens},
        }

    def openai_responses(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_input_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def anthropic(self, output_tokens: int | None = None) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "cache_read_input_tokens": self.cached_input_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
        }


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


@dataclass
class FakeProvider:
    usage: FakeUsage = field(default_factory=FakeUsage)
    requests: list[dict[str, Any]] = field(default_factory=list)  # the bodies received

    # -- running ---------------------------------------------------------------

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        return int(server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- answers ---------------------------------------------------------------

    async def _read(self, request: web.Request) -> tuple[dict[str, Any], set[str]]:
        body = await request.json()
        self.requests.append(body)
        wishes = {wish.strip() for wish in request.headers.get("x-fake", "").split(",")}
        return body, wishes

    async def _stream(
        self, request: web.Request, events: Iterator[bytes], wishes: set[str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for sent, event in enumerate(events):
                if "cut" in wishes and sent == CUT_AFTER + 1:
                    assert request.transport is not None
                    request.transport.close()  # broken off: no end of the chunked body
                    return response
                await response.write(event)
            await response.write_eof()
        except ConnectionResetError:  # the client left half way (aiohttp's is a subclass)
            pass
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, wishes = await self._read(request)
        if "fail" in wishes:
            return _openai_error()
        model = body["model"]
        if body.get("stream"):
            options = body.get("stream_options") or {}
            with_usage = bool(options.get("include_usage")) and "no-usage" not in wishes
            return await self._stream(request, self._chat_chunks(model, with_usage), wishes)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(WORDS)}
        finish = "stop"
        if "tools" in wishes:
            call = {"name": "search", "arguments": '{"query": "cats"}'}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
            }
            finish = "tool_calls"
        answer = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if "no-usage" not in wishes:
            answer["usage"] = self.usage.openai_chat()
        return web.json_response(answer)

    def _chat_chunks(self, model: str, with_usage: bool) -> Iterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        yield _sse(chunk({"role": "assistant", "content": ""}))
        for word in WORDS:
            yield _sse(chunk({"content": word}))
        yield _sse(chunk({}, "stop"))
        if with_usage:
            last = {**chunk({}), "choices": [], "usage": self.usage.openai_chat()}
            yield _sse(last)
        yield _sse("[DONE]")

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body, wishes = await self._read(request)
        if "fail" in wishes:
            return _openai_error()
        if body.get("stream"):
            return await self._stream(request, self._response_events(body["model"]), wishes)
        return web.json_response(self._response(body["model"], "completed"))

    def _response(self, model: str, status: str) -> dict[str, Any]:
        done = status == "completed"
        text = "".join(WORDS) if done else ""
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": 1,
            "model": model,
            "status": status,
            "output": [
                {
                    "type": "message",
                    "id": "msg_fake",
                    "status": status,
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ]
            if done
            else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": self.usage.openai_responses() if done else None,
        }

    def _response_events(self, model: str) -> Iterator[bytes]:
        sequence = iter(range(1_000))
        created = {"type": "response.created", "response": self._response(model, "in_progress")}
        yield _sse({**created, "sequence_number": next(sequence)}, "response.created")
        for word in WORDS:
            delta: dict[str, Any] = {
                "type": "response.output_text.delta",
                "item_id": "msg_fake",
                "output_index": 0,
                "content_index": 0,
                "delta": word,
                "logprobs": [],
                "sequence_number": next(sequence),
            }
            yield _sse(delta, "response.output_text.delta")
        completed = {
            "type": "response.completed",
            "response": self._response(model, "completed"),
            "sequence_number": next(sequence),
        }
        yield _sse(completed, "response.completed")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, wishes = await self._read(request)
        if "fail" in wishes:
            error = {"type": "invalid_request_error", "message": "the fake provider fails"}
            return web.json_response({"type": "error", "error": error}, status=400)
        model = body["model"]
        if body.get("stream"):
            return await self._stream(request, self._message_events(model), wishes)
        return web.json_response(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "".join(WORDS)}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": self.usage.anthropic(),
            }
        )

    def _message_events(self, model: str) -> Iterator[bytes]:
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self.usage.anthropic(output_tokens=1),
        }
        yield _sse({"type": "message_start", "message": message}, "message_start")
        text_block = {"type": "text", "text": ""}
        start = {"type": "content_block_start", "index": 0, "content_block": text_block}
        yield _sse(start, "content_block_start")
        for word in WORDS:
            delta = {"type": "text_delta", "text": word}
            yield _sse(
                {"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"
            )
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        final: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": self.usage.output_tokens},
        }
        yield _sse(final, "message_delta")
        yield _sse({"type": "message_stop"}, "message_stop")


def _openai_error() -> web.Response:
    error = {"message": "the fake provider fails", "type": "invalid_request_error"}
    return web.json_response({"error": error}, status=400)
