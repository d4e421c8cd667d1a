"""Reading a provider's answer as it streams through the gateway, chunk by chunk.

Chunks arrive cut anywhere: inside an SSE line, a JSON document, a multi-byte UTF-8
sequence, a gzip block. ``AnswerReader`` inflates gzip (bounded), splits server-sent
events on complete lines only, and hands each JSON document to a
``domain.response_usage.UsageTracker``. When the gateway asked for a usage chunk the
client did not ask for, it also drops that one event from what the client receives,
holding back only the bytes of an event not complete yet. Otherwise it never changes
a byte the client gets.
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

import orjson

from budget_guard.domain.response_usage import UsageTracker

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a JSON answer, or the inflated size of any answer


class SseEvent(NamedTuple):
    raw: bytes  # the event's bytes, as they came (lines and the blank line after them)
    name: str
    data: str


class SseSplitter:
    """Server-sent events from bytes cut anywhere (lines end in LF or CRLF)."""

    def __init__(self) -> None:
        self._partial_line = b""
        self._event_raw: list[bytes] = []
        self._name = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[SseEvent]:
        lines = (self._partial_line + data).split(b"\n")
        self._partial_line = lines.pop()
        events = []
        for line in lines:
            event = self._line(line + b"\n")
            if event is not None:
                events.append(event)
        return events

    def pending(self) -> bytes:
        """The bytes of the event not complete yet (held back, when stripping)."""
        return b"".join(self._event_raw) + self._partial_line

    def _line(self, raw: bytes) -> SseEvent | None:
        self._event_raw.append(raw)
        line = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self._name = value
            elif field == "data":
                self._data.append(value)
            return None
        event = SseEvent(b"".join(self._event_raw), self._name, "\n".join(self._data))
        self._event_raw, self._name, self._data = [], "", []
        return event


class TooLarge(Exception):
    """The answer passed ``MAX_ANSWER_BYTES`` (inflated): reading stopped."""


class _Inflater:
    def __init__(self) -> None:
        self._decompressor = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib
        self._total = 0

    def inflate(self, data: bytes) -> bytes:
        room = MAX_ANSWER_BYTES - self._total
        out = self._decompressor.decompress(data, room)
        self._total += len(out)
        if self._decompressor.unconsumed_tail:
            raise TooLarge
        return out


def _is_stripped_usage(event: SseEvent) -> bool:
    """OpenAI's extra chunk for ``include_usage``: no choices, only the usage."""
    if '"usage"' not in event.data:
        return False
    try:
        document = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(document, dict) and document.get("choices") == [] and bool(document.get("usage"))
    )


class AnswerReader:
    """One answer: ``feed`` each chunk, ``finish`` at its end; usage in ``tracker``."""

    def __init__(
        self,
        tracker: UsageTracker,
        *,
        streamed: bool,
        gzipped: bool,
        strip_usage: bool,
        readable: bool = True,
    ) -> None:
        """``readable`` False: an encoding that cannot be read (brotli, zstd): the answer
        goes by untouched and unread."""
        self.tracker = tracker
        self._readable = readable
        self._streamed = streamed
        self._inflater = _Inflater() if gzipped else None
        # Stripping rewrites bytes, which a gzip answer would need compressed again.
        self._strip = strip_usage and streamed and not gzipped and readable
        self._sse = SseSplitter()
        self._json: list[bytes] = []
        self._json_size = 0
        self.too_large = False
        self._finished = False
        self.unreadable = 0  # events or answers that were not JSON

    @property
    def rewrites(self) -> bool:
        """Does this reader change the bytes the client gets?"""
        return self._strip

    def feed(self, chunk: bytes) -> bytes | None:
        """Read ``chunk``; returns what the client gets instead when rewriting, else None."""
        if not self._readable:
            return None
        if self.too_large:
            return None if not self._strip else chunk
        try:
            data = self._inflater.inflate(chunk) if self._inflater else chunk
        except (TooLarge, zlib.error):
            self.too_large = True
            return None if not self._strip else self._sse.pending() + chunk
        if not self._streamed:
            self._keep_json(data)
            return None
        events = self._sse.feed(data)
        for event in events:
            self._read_event(event)
        if not self._strip:
            return None
        return b"".join(event.raw for event in events if not _is_stripped_usage(event))

    def finish(self, *, cut: bool = False) -> bytes | None:
        """At the end of the answer (once; later calls do nothing): the last bytes held
        back, when rewriting. ``cut``: the answer stopped short (client gone, upstream
        reset); an event or document it stopped inside is not read."""
        if self._finished or not self._readable:
            return None
        self._finished = True
        if cut:
            return None
        if not self._streamed:
            if not self.too_large:
                self._read_json()
            return None
        pending = self._sse.pending()
        if not pending:
            return b"" if self._strip else None
        # An answer that ended without the blank line after its last event: at most one
        # event, held back whole when stripping.
        events = SseSplitter().feed(pending + b"\n\n")
        for event in events:
            self._read_event(event)
        if self._strip and any(_is_stripped_usage(event) for event in events):
            return b""
        return pending if self._strip else None

    def _read_event(self, event: SseEvent) -> None:
        if not event.data or event.data.strip() == "[DONE]":
            return
        try:
            document: Any = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self.unreadable += 1
            return
        if isinstance(document, dict):
            self.tracker.add_event(event.name, document)

    def _keep_json(self, data: bytes) -> None:
        self._json_size += len(data)
        if self._json_size > MAX_ANSWER_BYTES:
            self.too_large = True
            self._json.clear()
            return
        self._json.append(data)

    def _read_json(self) -> None:
        try:
            document = orjson.loads(b"".join(self._json))
        except orjson.JSONDecodeError:
            self.unreadable += 1
            return
        if isinstance(document, dict):
            self.tracker.add_answer(document)
        elif isinstance(document, list):  # Gemini's streamGenerateContent without alt=sse
            for item in document:
                if isinstance(item, dict):
                    self.tracker.add_event("", item)
