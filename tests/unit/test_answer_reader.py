"""Reading providers' answers cut anywhere: the same usage however the bytes arrive,
and the client's bytes untouched (or without exactly the usage chunk it did not ask for)."""

from __future__ import annotations

import gzip
import json
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from budget_guard.domain.endpoints import Api
from budget_guard.domain.pricing import Usage
from budget_guard.domain.response_usage import UsageTracker
from budget_guard.webhook.answer_reader import MAX_ANSWER_BYTES, AnswerReader
from tests.fixtures.provider_answers import (
    PROVIDERS,
    TEXT,
    anthropic_stream,
    openai_chat_stream,
)

APIS = {
    "openai-chat": Api.OPENAI,
    "openai-responses": Api.OPENAI,
    "anthropic": Api.ANTHROPIC,
    "gemini": Api.GEMINI,
}
EXPECTED = {
    "openai-chat": Usage(input_tokens=600, output_tokens=200, cached_input_tokens=400),
    "openai-responses": Usage(input_tokens=600, output_tokens=200, cached_input_tokens=400),
    "anthropic": Usage(
        input_tokens=100, output_tokens=50, cached_input_tokens=1000, cache_write_tokens=200
    ),
    "gemini": Usage(input_tokens=800, output_tokens=150, cached_input_tokens=200),
}


def cut(data: bytes, offsets: list[int]) -> list[bytes]:
    points = sorted({offset % (len(data) + 1) for offset in offsets})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def read(
    api: Api, chunks: list[bytes], *, streamed: bool, gzipped: bool = False, strip: bool = False
) -> tuple[AnswerReader, bytes]:
    reader = AnswerReader(UsageTracker(api), streamed=streamed, gzipped=gzipped, strip_usage=strip)
    out = b""
    for chunk in chunks:
        replaced = reader.feed(chunk)
        out += chunk if replaced is None else replaced
    tail = reader.finish()
    return reader, out + (tail or b"")


offsets = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)


@settings(max_examples=60, deadline=None)
@given(provider=st.sampled_from(sorted(PROVIDERS)), points=offsets)
def test_a_stream_cut_anywhere_gives_the_whole_usage_and_text(
    provider: str, points: list[int]
) -> None:
    data = PROVIDERS[provider]["stream"].encode()
    reader, out = read(APIS[provider], cut(data, points), streamed=True)
    assert out == data
    assert reader.tracker.usage == EXPECTED[provider]
    assert reader.tracker.text == "".join(TEXT)
    assert reader.unreadable == 0


@settings(max_examples=40, deadline=None)
@given(provider=st.sampled_from(sorted(PROVIDERS)), points=offsets)
def test_a_json_answer_cut_anywhere_and_gzipped_gives_the_usage(
    provider: str, points: list[int]
) -> None:
    packed = gzip.compress(json.dumps(PROVIDERS[provider]["plain"]).encode())
    reader, out = read(APIS[provider], cut(packed, points), streamed=False, gzipped=True)
    assert out == packed  # a gzip answer is read, never rewritten
    assert reader.tracker.usage == EXPECTED[provider]


@settings(max_examples=60, deadline=None)
@given(points=offsets, crlf=st.booleans())
def test_the_usage_chunk_is_removed_and_nothing_else(points: list[int], crlf: bool) -> None:
    def wire(text: str) -> bytes:
        return (text.replace("\n", "\r\n") if crlf else text).encode()

    data, expected = wire(openai_chat_stream()), wire(openai_chat_stream(usage=False))
    reader, out = read(Api.OPENAI, cut(data, points), streamed=True, strip=True)
    assert out == expected
    assert reader.tracker.usage == EXPECTED["openai-chat"]


def test_a_last_event_without_its_blank_line_is_still_read() -> None:
    data = openai_chat_stream().removesuffix("data: [DONE]\n\n").rstrip("\n").encode()
    reader, out = read(Api.OPENAI, [data], streamed=True, strip=True)
    assert reader.tracker.usage == EXPECTED["openai-chat"]
    assert b'"usage"' not in out


def test_a_cut_stream_keeps_what_was_said_and_ignores_the_torn_event() -> None:
    data = anthropic_stream().encode()
    torn = data.index(b"message_delta") + 20  # inside the event with the output count
    reader = AnswerReader(
        UsageTracker(Api.ANTHROPIC), streamed=True, gzipped=False, strip_usage=False
    )
    reader.feed(data[:torn])
    reader.finish(cut=True)
    tracker = reader.tracker
    assert tracker.input == EXPECTED["anthropic"]._replace(output_tokens=0)
    assert tracker.output_tokens is None and tracker.usage is None
    assert tracker.text == "".join(TEXT)
    assert reader.unreadable == 0
    estimate = Usage(input_tokens=999)
    assert tracker.settled_usage(estimate, counted_output=7) == tracker.input._replace(
        output_tokens=7
    )


def test_a_gzip_bomb_stops_reading_and_passes_the_bytes() -> None:
    bomb = zlib.compress(b"0" * (MAX_ANSWER_BYTES + 1024), 9)
    reader, out = read(Api.OPENAI, cut(bomb, [100, 1000]), streamed=False, gzipped=True)
    assert reader.too_large and out == bomb
    assert reader.tracker.usage is None


def test_an_unreadable_encoding_goes_by_unread() -> None:
    reader = AnswerReader(
        UsageTracker(Api.OPENAI), streamed=True, gzipped=True, strip_usage=True, readable=False
    )
    assert not reader.rewrites
    assert reader.feed(b"\x8b\x00 brotli bytes") is None
    assert reader.finish() is None


def test_gemini_streams_without_sse_are_a_json_array() -> None:
    chunks = [
        json.loads(line.removeprefix("data: "))
        for line in PROVIDERS["gemini"]["stream"].split("\n\n")
        if line
    ]
    data = json.dumps(chunks).encode()
    reader, _ = read(Api.GEMINI, cut(data, [3, 50, 51, 400]), streamed=False)
    assert reader.tracker.usage == EXPECTED["gemini"]
    assert reader.tracker.model == "gemini-2.5-flash"


def test_a_bad_usage_object_is_counted_not_raised() -> None:
    tracker = UsageTracker(Api.OPENAI)
    tracker.add_answer({"usage": {"prompt_tokens": -1, "completion_tokens": 2}})
    assert tracker.failures == 1 and tracker.usage is None
