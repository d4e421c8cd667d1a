"""One LLM call as the gateway's ext_proc filter sees it go by, and what it does with it.

ext_authz has already decided the call and put its id (``x-budget-request-id``) and,
on a soft limit, the cheaper model (``x-budget-model-override``) on the request.
Here, free of gRPC (``webhook.ext_proc`` translates Envoy's messages):

- **request body**: the model downgrade made real (the body's ``model``, or the model
  in a Gemini path), and an OpenAI stream asked for its usage
  (``stream_options.include_usage``), with ``content-length`` set to the new length;
- **response**: read as it streams by (``webhook.answer_reader``), never held back;
  the usage chunk the client did not ask for is removed from what it receives;
- **end**: what to settle, once: the provider's usage when it said it; otherwise what
  was seen (input from the request's estimate, output counted over the streamed text);
  an upstream error with no usage releases the reservation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from budget_guard.domain.endpoints import Api, Pricing, endpoint
from budget_guard.domain.pricing import ModelPrice, UnknownModelError, Usage
from budget_guard.domain.response_usage import UsageTracker
from budget_guard.domain.tokens import RequestEstimator
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.answer_reader import AnswerReader
from budget_guard.webhook.body import model_from_path
from budget_guard.webhook.responses import HEADER_MODEL_OVERRIDE, HEADER_REQUEST_ID

_GEMINI_MODEL_IN_PATH = re.compile(r"(/models/)([A-Za-z0-9._\-]{1,200})(:)")
_STREAMING_CHAT = re.compile(r"/v1/(chat/)?completions$|/deployments/[^/]+/(chat/)?completions$")


class Settled(StrEnum):
    """How a call's cost was known."""

    REPORTED = "reported"  # the provider's usage
    SEEN = "seen"  # input estimated, output counted over what was streamed
    RELEASED = "released"  # an upstream error without usage: nothing is charged


@dataclass(frozen=True)
class HeaderEdits:
    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class BodyEdit:
    body: bytes
    headers: HeaderEdits


@dataclass(frozen=True)
class CallEnd:
    """What to settle for one call, decided once at its end."""

    request_id: str
    model: str  # priced as this model (the one the provider was asked for)
    price: ModelPrice
    usage: Usage  # zero for a release
    settled: Settled
    early: bool  # the stream ended before the answer did
    api: Api  # the answer's shape


@dataclass(frozen=True)
class GatewayTools:
    """What every call reads: the configuration in force (prices) and the tokenizers."""

    config: ConfigHolder
    estimator: RequestEstimator
    max_body_bytes: int


@dataclass
class _Request:
    request_id: str
    path: str
    api: Api
    override: str | None
    model: str | None = None
    document: Mapping[str, Any] | None = None
    strip_usage: bool = False


@dataclass
class GatewayCall:
    """One HTTP call through the gateway: feed it Envoy's phases in order; ``end()``
    says, once, what to settle (None for a call that is not ours to settle)."""

    tools: GatewayTools
    problems: list[str] = field(default_factory=list)  # why a call could not be settled
    _request: _Request | None = None
    _status: int = 0
    _reader: AnswerReader | None = None
    _answer_ended: bool = False
    _ended: bool = False

    @property
    def priced(self) -> bool:
        """Is this a call ext_authz reserved for (so ours to settle)?"""
        return self._request is not None

    @property
    def answer_ended(self) -> bool:
        return self._answer_ended

    @property
    def api(self) -> Api | None:
        return self._request.api if self._request is not None else None

    @property
    def unreadable_usage(self) -> int:
        """Events, answers or usage objects of the answer that could not be read."""
        reader = self._reader
        if reader is None:
            return 0
        return reader.unreadable + reader.tracker.failures + int(reader.too_large)

    # -- the request ------------------------------------------------------------------

    def on_request_headers(self, headers: Mapping[str, str]) -> HeaderEdits:
        request_id = headers.get(HEADER_REQUEST_ID)
        path = headers.get(":path", "/")
        method = headers.get(":method", "POST")
        where = endpoint(method, path)
        if not request_id or where.pricing is Pricing.FREE:
            return HeaderEdits()
        override = headers.get(HEADER_MODEL_OVERRIDE) or None
        request = _Request(request_id, path, where.api, override, model=model_from_path(path))
        self._request = request
        if where.api is Api.GEMINI and override and request.model not in (None, override):
            request.model = override  # Gemini names the model in the path, not the body
            new_path = _GEMINI_MODEL_IN_PATH.sub(rf"\g<1>{override}\g<3>", path, count=1)
            return HeaderEdits(set=((":path", new_path),))
        return HeaderEdits()

    def on_request_body(self, body: bytes, end: bool) -> BodyEdit | None:
        """The whole request body (``BUFFERED``); returns the new body when it changed."""
        request = self._request
        if request is None or not end or len(body) > self.tools.max_body_bytes:
            return None
        document = _json_object(body)
        if document is None:
            return None
        request.document = document
        if isinstance(document.get("model"), str):
            request.model = document["model"]
        changed = self._downgrade(request, document) | self._ask_for_usage(request, document)
        if not changed:
            return None
        new_body = orjson.dumps(document)
        request.document = document
        return BodyEdit(new_body, HeaderEdits(set=(("content-length", str(len(new_body))),)))

    def _downgrade(self, request: _Request, document: dict[str, Any]) -> bool:
        override = request.override
        if override is None or "model" not in document or document["model"] == override:
            return False
        document["model"] = override
        request.model = override
        return True

    def _ask_for_usage(self, request: _Request, document: dict[str, Any]) -> bool:
        """An OpenAI chat or completions stream sends its usage only when asked."""
        if request.api is not Api.OPENAI or document.get("stream") is not True:
            return False
        if not _STREAMING_CHAT.search(request.path.split("?", 1)[0].rstrip("/")):
            return False
        options = document.get("stream_options")
        if isinstance(options, Mapping) and options.get("include_usage") is True:
            return False
        asked = dict(options) if isinstance(options, Mapping) else {}
        document["stream_options"] = {**asked, "include_usage": True}
        request.strip_usage = True
        return True

    # -- the answer -------------------------------------------------------------------

    def on_response_headers(self, headers: Mapping[str, str], end: bool) -> HeaderEdits:
        request = self._request
        if request is None:
            return HeaderEdits()
        self._status = _status(headers.get(":status", ""))
        content_type = headers.get("content-type", "").lower()
        encoding = headers.get("content-encoding", "").lower().strip()
        streamed = content_type.startswith("text/event-stream")
        readable = encoding in ("", "identity", "gzip", "x-gzip", "deflate")
        if not readable:
            self.problems.append(f"content-encoding {encoding!r} cannot be read")
        self._reader = AnswerReader(
            UsageTracker(request.api),
            streamed=streamed,
            gzipped=encoding not in ("", "identity"),
            strip_usage=request.strip_usage and readable,
            readable=readable,
        )
        if end:
            self._answer_ended = True
        if self._reader.rewrites:  # the length changes as the usage chunk goes
            return HeaderEdits(remove=("content-length",))
        return HeaderEdits()

    def on_response_body(self, chunk: bytes, end: bool) -> bytes | None:
        """One chunk (``STREAMED``) or the whole body; returns what the client gets
        instead, when it changed."""
        reader = self._reader
        if reader is None:
            return None
        replaced = reader.feed(chunk)
        if end:
            self._answer_ended = True
            tail = reader.finish()
            if tail:
                replaced = (replaced if replaced is not None else chunk) + tail
        return replaced

    def on_response_trailers(self) -> None:
        if self._reader is not None and not self._answer_ended:
            self._reader.finish()
        self._answer_ended = True

    # -- the end ----------------------------------------------------------------------

    def end(self) -> CallEnd | None:
        """What to settle, the first time it is asked; None when the call is not ours,
        was settled already, or cannot be priced (``problems`` says why)."""
        if self._ended or self._request is None:
            return None
        self._ended = True
        request = self._request
        early = not self._answer_ended
        if self._reader is not None and early:
            self._reader.finish(cut=True)
        tracker = self._reader.tracker if self._reader is not None else UsageTracker(request.api)
        priced = self._price(request, tracker)
        if priced is None:
            return None
        model, price = priced

        def settle(usage: Usage, settled: Settled) -> CallEnd:
            return CallEnd(request.request_id, model, price, usage, settled, early, request.api)

        if tracker.usage is not None:  # complete, or the counts so far of a cut stream
            return settle(tracker.usage, Settled.REPORTED)
        if self._status >= 400:
            return settle(Usage(), Settled.RELEASED)
        if request.document is None and tracker.input is None:
            self.problems.append("neither the request body nor the provider's usage was seen")
            return None
        estimated = self._estimated_input(request, price)
        seen = tracker.settled_usage(estimated, self._counted_output(tracker, price))
        return settle(seen, Settled.SEEN)

    def _price(self, request: _Request, tracker: UsageTracker) -> tuple[str, ModelPrice] | None:
        config = self.tools.config.current
        if config is None:
            self.problems.append("no configuration loaded: prices unknown")
            return None
        candidates = [model for model in (request.model, tracker.model) if model]
        for model in candidates:
            try:
                return model, config.prices.price(model).price
            except UnknownModelError:
                continue
        if candidates:  # no model at all: a call ext_authz did not price either
            self.problems.append(f"model {candidates[0]!r} has no price")
        return None

    def _estimated_input(self, request: _Request, price: ModelPrice) -> Usage:
        if request.document is None:
            return Usage()
        estimate = self.tools.estimator.estimate(request.document, price)
        return Usage(input_tokens=estimate.input_tokens)

    def _counted_output(self, tracker: UsageTracker, price: ModelPrice) -> int:
        counted = self.tools.estimator.count_text(tracker.text, price)
        return counted + self.tools.estimator.count_length(tracker.overflow_chars, price)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _status(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
