"""What a provider's answer says about a call's usage, read as the gateway sees it go by.

An answer is either one JSON document, or a stream of server-sent events, each one
JSON document. ``UsageTracker`` takes them one by one and keeps what matters:

- OpenAI chat completions: ``usage`` in the answer, or in the stream's last chunk
  (``stream_options.include_usage``); text in ``choices[].delta.content``.
- OpenAI Responses: ``usage`` of the answer, or of the ``response.completed`` event's
  ``response``; text in ``response.output_text.delta`` events.
- Anthropic Messages: ``usage`` of the answer; in a stream, the input side in
  ``message_start``'s ``message.usage`` and the output count in ``message_delta``'s
  ``usage``; text in ``content_block_delta`` events.
- Gemini: ``usageMetadata`` of the answer or of the stream's last chunk (each chunk
  carries the counts so far); text in ``candidates[].content.parts[].text``.

Usage objects are read by ``domain.usage.parse_usage``, the same reader as
``POST /v1/usage``. When a stream ends before the provider said everything (the client
went away, the upstream reset), ``settled_usage`` fills what is missing: input from the
request's estimate, output counted over the text that was streamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from budget_guard.domain.endpoints import Api
from budget_guard.domain.pricing import Usage
from budget_guard.domain.usage import parse_usage

MAX_TEXT_CHARS = 4_000_000  # streamed text kept for counting; beyond it, only its length


class UsageTracker:
    """One answer's usage as the provider reported it, and its streamed text."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.input: Usage | None = None  # input side (tokens, cache reads and writes)
        self.output_tokens: int | None = None
        self.model: str | None = None  # the model the provider says it served
        self.failures = 0  # usage objects that could not be read
        self._text: list[str] = []
        self._text_chars = 0
        self.overflow_chars = 0  # text beyond MAX_TEXT_CHARS, counted by length only

    # -- feeding ---------------------------------------------------------------------

    def add_answer(self, document: Mapping[str, Any]) -> None:
        """A whole JSON answer (not streamed)."""
        self._model_of(document)
        usage = document.get("usageMetadata") if self.api is Api.GEMINI else document.get("usage")
        if isinstance(usage, Mapping):
            self._complete(usage)
        response = document.get("response")  # Responses API wrappers
        if isinstance(response, Mapping) and isinstance(response.get("usage"), Mapping):
            self._complete(response["usage"])

    def add_event(self, event: str, data: Mapping[str, Any]) -> None:
        """One server-sent event's JSON data (``event`` is its ``event:`` name, or "")."""
        kind = str(data.get("type") or event)
        if self.api is Api.ANTHROPIC:
            self._anthropic(kind, data)
        elif self.api is Api.GEMINI:
            self._gemini(data)
        elif kind.startswith("response."):
            self._responses(kind, data)
        else:
            self._chat(data)

    # -- what was learnt -------------------------------------------------------------

    @property
    def usage(self) -> Usage | None:
        """The provider's own account of the call, when it gave both sides."""
        if self.input is None or self.output_tokens is None:
            return None
        return self.input._replace(output_tokens=self.output_tokens)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def settled_usage(self, estimated_input: Usage, counted_output: int) -> Usage:
        """What to charge: the provider's figures where it gave them, else the request's
        input estimate and the output counted over the streamed text."""
        given = self.input or estimated_input
        output = self.output_tokens if self.output_tokens is not None else counted_output
        return given._replace(output_tokens=output)

    # -- the shapes ------------------------------------------------------------------

    def _chat(self, data: Mapping[str, Any]) -> None:
        self._model_of(data)
        for choice in data.get("choices") or ():
            if isinstance(choice, Mapping):
                delta = choice.get("delta") or {}
                if isinstance(delta, Mapping):
                    self._keep(delta.get("content"))
                    for call in delta.get("tool_calls") or ():
                        if isinstance(call, Mapping):
                            self._keep((call.get("function") or {}).get("arguments"))
        if isinstance(data.get("usage"), Mapping):
            self._complete(data["usage"])

    def _responses(self, kind: str, data: Mapping[str, Any]) -> None:
        if kind == "response.output_text.delta" or kind.endswith("arguments.delta"):
            self._keep(data.get("delta"))
        response = data.get("response")
        if isinstance(response, Mapping):
            self._model_of(response)
            if isinstance(response.get("usage"), Mapping):
                self._complete(response["usage"])

    def _anthropic(self, kind: str, data: Mapping[str, Any]) -> None:
        if kind == "message_start" and isinstance(data.get("message"), Mapping):
            message = data["message"]
            self._model_of(message)
            if isinstance(message.get("usage"), Mapping):
                self._input_side(message["usage"])
        elif kind == "message_delta" and isinstance(data.get("usage"), Mapping):
            usage = data["usage"]
            if isinstance(usage.get("output_tokens"), int):
                self.output_tokens = usage["output_tokens"]
            if self.input is None and "input_tokens" in usage:
                self._input_side(usage)
        elif kind == "content_block_delta" and isinstance(data.get("delta"), Mapping):
            delta = data["delta"]
            self._keep(delta.get("text") or delta.get("partial_json") or delta.get("thinking"))
        elif kind == "message" or "usage" in data:  # a whole message, not streamed
            self.add_answer(data)

    def _gemini(self, data: Mapping[str, Any]) -> None:
        self._model_of(data, "modelVersion")
        for candidate in data.get("candidates") or ():
            content = candidate.get("content") if isinstance(candidate, Mapping) else None
            for part in (content or {}).get("parts") or () if isinstance(content, Mapping) else ():
                if isinstance(part, Mapping):
                    self._keep(part.get("text"))
        if isinstance(data.get("usageMetadata"), Mapping):
            self._complete({"usageMetadata": data["usageMetadata"]})  # the counts so far

    # -- helpers ---------------------------------------------------------------------

    def _complete(self, raw: Mapping[str, Any]) -> None:
        try:
            usage = parse_usage(raw)
        except ValueError:
            self.failures += 1
            return
        self.input = usage._replace(output_tokens=0)
        self.output_tokens = usage.output_tokens

    def _input_side(self, raw: Mapping[str, Any]) -> None:
        try:
            usage = parse_usage({**raw, "output_tokens": 0})
        except ValueError:
            self.failures += 1
            return
        self.input = usage

    def _model_of(self, document: Mapping[str, Any], field: str = "model") -> None:
        model = document.get(field)
        if isinstance(model, str) and model:
            self.model = model

    def _keep(self, text: object) -> None:
        if not isinstance(text, str) or not text:
            return
        if self._text_chars + len(text) > MAX_TEXT_CHARS:
            self.overflow_chars += len(text)
            return
        self._text.append(text)
        self._text_chars += len(text)
