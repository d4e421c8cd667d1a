"""Token estimation of an LLM request body, before the call.

Input tokens are counted in the model's encoding when it is loaded, else in
``cl100k_base``, else by a bytes/4 heuristic; the estimate always says which.
Output tokens are the request's own cap (``max_tokens`` and its aliases, capped
at the model's maximum) or the model's default.

Tokenizers are injected (``Tokenizer`` protocol): this module does no I/O; the
adapters load tiktoken encodings off the hot path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from budget_guard.domain.pricing import ModelPrice

FALLBACK_ENCODING = "cl100k_base"
HEURISTIC_NAME = "heuristic:bytes/4"
IMAGE_TOKENS = 765  # OpenAI's cost of a 1024x1024 image at high detail; a fair flat guess
# An image at its dearest among the priced providers (Anthropic's 1.15 megapixel cap).
IMAGE_TOKENS_WORST_CASE = 1_600
UPPER_BOUND_NAME = "upper-bound:bytes"
MESSAGE_OVERHEAD_TOKENS = 3  # per message, as OpenAI's chat format counts it
REPLY_PRIMING_TOKENS = 3
OUTPUT_TOKENS_CEILING = 1_000_000  # for models whose maximum is unknown
MAX_CHOICES = 128
_CACHE_MIN_CHARS = 64  # shorter texts are kept by value in a small dict of their own
_SHORT_TEXTS = 4096
# A message with only these keys (the last one not counted) is a role and a text.
_PLAIN_MESSAGE_KEYS = frozenset({"role", "content", "tool_call_id"})


class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class HeuristicTokenizer:
    """About four bytes of UTF-8 per token: the last resort, and for cut bodies."""

    name = HEURISTIC_NAME

    def count(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8", "replace")) / 4)

    @staticmethod
    def count_bytes(length: int) -> int:
        return math.ceil(length / 4)


class ByteBoundTokenizer:
    """One token per UTF-8 byte: an upper bound for every byte-level tokenizer (each
    token stands for at least one byte), so a worst-case reservation's input count."""

    name = UPPER_BOUND_NAME

    def count(self, text: str) -> int:
        return len(text.encode("utf-8", "replace"))


class TokenizerSet:
    """The loaded tokenizers by encoding name, with the fallback chain applied."""

    def __init__(self, loaded: Mapping[str, Tokenizer]) -> None:
        self._loaded = dict(loaded)
        self._heuristic = HeuristicTokenizer()

    @property
    def loaded_encodings(self) -> tuple[str, ...]:
        return tuple(sorted(self._loaded))

    def for_encoding(self, encoding: str) -> tuple[Tokenizer, str]:
        """The tokenizer for ``encoding`` and the estimator label to report."""
        tokenizer = self._loaded.get(encoding)
        if tokenizer is not None:
            return tokenizer, f"tiktoken:{encoding}"
        fallback = self._loaded.get(FALLBACK_ENCODING)
        if fallback is not None:
            return fallback, f"tiktoken:{FALLBACK_ENCODING}(fallback for {encoding})"
        return self._heuristic, HEURISTIC_NAME


class MessageTokenCache:
    """Token counts by text, so an agent loop that resends its conversation every turn
    pays only for its new messages. Bounded: two generations of at most half the
    entries each; a text seen again in the older one moves to the newer, the older is
    dropped whole when the newer fills (an LRU's effect without its per-hit upkeep,
    which costs more than the lookup itself on a long conversation).

    Keyed by (encoding, length, Python's keyed 64-bit string hash): a collision can
    only skew an estimate, never a bill, because usage is settled exactly afterwards.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._generation = max(1, max_entries // 2)
        self._recent: dict[tuple[str, int, int], int] = {}
        self._older: dict[tuple[str, int, int], int] = {}
        self._short: dict[tuple[str, str], int] = {}  # roles, names: the same few strings
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._recent) + len(self._older)

    def count(self, tokenizer: Tokenizer, text: str) -> int:
        if self.max_entries <= 0:
            return tokenizer.count(text)
        if len(text) < _CACHE_MIN_CHARS:
            return self._count_short(tokenizer, text)
        key = (tokenizer.name, len(text), hash(text))
        counted = self._recent.get(key)
        if counted is not None:
            self.hits += 1
            return counted
        counted = self._older.get(key)
        if counted is not None:
            self.hits += 1
        else:
            self.misses += 1
            counted = tokenizer.count(text)
        self._keep(key, counted)
        return counted

    def _count_short(self, tokenizer: Tokenizer, text: str) -> int:
        short_key = (tokenizer.name, text)
        counted = self._short.get(short_key)
        if counted is None:
            counted = tokenizer.count(text)
            if len(self._short) >= _SHORT_TEXTS:
                self._short.clear()
            self._short[short_key] = counted
        return counted

    def _keep(self, key: tuple[str, int, int], counted: int) -> None:
        if len(self._recent) >= self._generation:
            self._older, self._recent = self._recent, {}
        self._recent[key] = counted


class TokenEstimate(NamedTuple):  # per request: a NamedTuple is cheap to build
    input_tokens: int
    output_tokens: int
    estimator: str
    # The conversation's part (``conversation_field``) alone, the items counted before
    # included, and in which tokenizer: what a resent conversation's next turn skips.
    conversation: str | None = None
    conversation_tokens: int = 0
    tokenizer: str = ""


# The lists an agent loop grows turn by turn: chat and Anthropic messages, Gemini
# contents, Responses API input items.
CONVERSATION_FIELDS = ("messages", "contents", "input")


def conversation_field(body: Mapping[str, Any]) -> str | None:
    """The body's conversation list, if it has one (Responses ``input``: of items)."""
    for field in CONVERSATION_FIELDS:
        value = body.get(field)
        if isinstance(value, list):
            if field == "input" and not any(isinstance(item, Mapping) for item in value):
                continue  # texts or token ids, counted as a prompt
            return field
    return None


class CountedPrefix(NamedTuple):
    """The items a body's ``field`` leaves out (a resent conversation's earlier turns):
    their tokens, by tokenizer name."""

    field: str
    tokens: Mapping[str, int]


class PrefixNotCounted(Exception):
    """The items left out of a body were counted in another tokenizer than the one
    this request's model needs: read the body whole."""


class _Counter:
    """Walks the request formats; counts each text through the cache."""

    def __init__(
        self, tokenizer: Tokenizer, cache: MessageTokenCache | None, image_tokens: int
    ) -> None:
        self._tokenizer = tokenizer
        self._cache = cache
        self._image_tokens = image_tokens
        self.total = 0

    def text(self, value: object) -> None:
        if isinstance(value, str):
            if self._cache is None:
                self.total += self._tokenizer.count(value)
            else:
                self.total += self._cache.count(self._tokenizer, value)
        elif value is not None:
            self.json(value)

    def json(self, value: object) -> None:
        self.text(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))

    def prompt(self, value: object) -> None:
        """Completions ``prompt`` / embeddings ``input``: text, texts, or token ids."""
        if isinstance(value, list):
            for item in value:
                if isinstance(item, int):
                    self.total += 1
                elif isinstance(item, list):
                    self.total += len(item)
                else:
                    self.text(item)
        else:
            self.text(value)

    def content(self, value: object) -> None:
        """Message content: a string, or OpenAI / Anthropic / Responses parts."""
        if isinstance(value, str):
            self.text(value)
            return
        if not isinstance(value, list):
            self.text(value)
            return
        for part in value:
            if not isinstance(part, Mapping):
                self.text(part)
                continue
            self.part(part)

    def part(self, part: Mapping[str, Any]) -> None:
        kind = part.get("type")
        if isinstance(part.get("text"), str):
            self.text(part["text"])
        elif kind in ("image_url", "image", "input_image"):
            self.total += self._image_tokens
        elif kind == "tool_use":
            self.text(part.get("name"))
            self.json(part.get("input", {}))
        elif kind == "tool_result":
            self.content(part.get("content"))
        elif kind in ("function_call", "function_call_output"):
            self.text(part.get("name"))
            self.text(part.get("arguments"))
            self.text(part.get("output"))
        else:
            self.json(part)

    def message(self, message: object) -> None:
        # JSON gives dicts: test for dict first, the Mapping ABC check costs several times more.
        if not isinstance(message, dict) and not isinstance(message, Mapping):
            self.text(message)
            return
        self.total += MESSAGE_OVERHEAD_TOKENS
        self.text(message.get("role"))
        if "content" in message:
            self.content(message.get("content"))
        elif message.get("type"):  # Responses API items without content
            self.part(message)
        if message.get("name"):
            self.total += 1
            self.text(message["name"])
        for call in message.get("tool_calls") or ():
            function = call.get("function", {}) if isinstance(call, Mapping) else {}
            self.text(function.get("name"))
            self.text(function.get("arguments"))
        if isinstance(message.get("function_call"), Mapping):
            self.text(message["function_call"].get("name"))
            self.text(message["function_call"].get("arguments"))

    def messages(self, messages: list[Any]) -> None:
        """A conversation, with a fast path for its most common message, a role and a
        text (agent loops resend hundreds of them every turn): counted exactly as
        ``message`` counts it, with fewer Python steps."""
        cache = self._cache
        if cache is None:
            for message in messages:
                self.message(message)
            return
        tokenizer = self._tokenizer
        for message in messages:
            if type(message) is dict and _PLAIN_MESSAGE_KEYS.issuperset(message):
                role, content = message.get("role"), message.get("content")
                if type(role) is str and type(content) is str:
                    self.total += (
                        MESSAGE_OVERHEAD_TOKENS
                        + cache.count(tokenizer, role)
                        + cache.count(tokenizer, content)
                    )
                    continue
            self.message(message)

    def gemini_content(self, content: object) -> None:
        if not isinstance(content, Mapping):
            self.text(content)
            return
        self.total += MESSAGE_OVERHEAD_TOKENS
        for part in content.get("parts") or ():
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                self.text(part["text"])
            elif isinstance(part, Mapping) and ("inlineData" in part or "fileData" in part):
                self.total += self._image_tokens
            else:
                self.json(part)


def count_input_tokens(
    body: Mapping[str, Any],
    tokenizer: Tokenizer,
    cache: MessageTokenCache | None = None,
    image_tokens: int = IMAGE_TOKENS,
) -> int:
    """Input tokens of any supported request format (unknown shapes: the whole body)."""
    return _count_input(body, tokenizer, cache, image_tokens)[0]


def _count_input(
    body: Mapping[str, Any],
    tokenizer: Tokenizer,
    cache: MessageTokenCache | None,
    image_tokens: int,
) -> tuple[int, dict[str, int]]:
    """``count_input_tokens``, and the parts of it that are each conversation field."""
    counter = _Counter(tokenizer, cache, image_tokens)
    recognised = False
    parts: dict[str, int] = {}
    if isinstance(body.get("messages"), list):  # OpenAI chat, Anthropic messages
        recognised = True
        counter.messages(body["messages"])
        parts["messages"] = counter.total
        counter.total += REPLY_PRIMING_TOKENS
    if "system" in body:  # Anthropic: a string or text blocks
        recognised = True
        counter.content(body["system"])
    if "instructions" in body:  # Responses API
        recognised = True
        counter.text(body["instructions"])
    if "input" in body:  # Responses API, embeddings
        recognised = True
        before = counter.total
        if isinstance(body["input"], list) and any(isinstance(i, Mapping) for i in body["input"]):
            for item in body["input"]:
                counter.message(item)
        else:
            counter.prompt(body["input"])
        parts["input"] = counter.total - before
    if "prompt" in body:  # legacy completions
        recognised = True
        counter.prompt(body["prompt"])
    if isinstance(body.get("contents"), list):  # Gemini
        recognised = True
        before = counter.total
        for content in body["contents"]:
            counter.gemini_content(content)
        parts["contents"] = counter.total - before
    if "systemInstruction" in body:
        recognised = True
        counter.gemini_content(body["systemInstruction"])
    for definitions in ("tools", "functions"):
        if body.get(definitions):
            recognised = True
            counter.json(body[definitions])
    if not recognised:
        counter.json(body)
    return counter.total, parts


def _requested_output(body: Mapping[str, Any]) -> object:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        if name in body:
            return body[name]
    config = body.get("generationConfig")
    if isinstance(config, Mapping):
        return config.get("maxOutputTokens")
    return None


def _choices(body: Mapping[str, Any]) -> int:
    value = body.get("n", body.get("candidateCount", 1))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return 1
    return min(value, MAX_CHOICES)


def uncapped_output_tokens(price: ModelPrice, worst_case: bool) -> int:
    """Output of a request that sets no cap: the model's typical output, or its most."""
    if not worst_case:
        return price.default_output_tokens
    return price.max_output_tokens or OUTPUT_TOKENS_CEILING


def estimate_output_tokens(
    body: Mapping[str, Any], price: ModelPrice, worst_case: bool = False
) -> int:
    """The request's own output cap (capped at the model's maximum), else the model's
    default, or with ``worst_case`` its maximum (the most the call can produce)."""
    requested = _requested_output(body)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        per_choice = uncapped_output_tokens(price, worst_case)
    else:
        per_choice = price.cap_output_tokens(requested)
    per_choice = min(per_choice, OUTPUT_TOKENS_CEILING)
    return per_choice * _choices(body)


def corrected(tokens: int, price: ModelPrice) -> int:
    """Apply the model family's correction for counting in a foreign encoding."""
    if price.token_correction == 1:
        return tokens
    return math.ceil(tokens * price.token_correction)


class RequestEstimator:
    """Estimates a request's tokens; one per process, shared by every request."""

    def __init__(self, tokenizers: TokenizerSet, cache: MessageTokenCache | None = None) -> None:
        self.tokenizers = tokenizers
        self.cache = cache

    def estimate(
        self,
        body: Mapping[str, Any],
        price: ModelPrice,
        worst_case: bool = False,
        counted: CountedPrefix | None = None,
    ) -> TokenEstimate:
        """The request's tokens; with ``worst_case``, the most the call can use: input
        at one token per byte of text (and images at their dearest), output at its cap
        or the model's maximum. Settlement of a worst case can only lower the charge.

        ``counted``: the body's conversation field holds only the items after those a
        resent conversation repeats, counted before (raises ``PrefixNotCounted`` when
        not in the tokenizer this request needs)."""
        output_tokens = estimate_output_tokens(body, price, worst_case)
        if worst_case:
            tokenizer: Tokenizer = _BYTE_BOUND
            label, images = UPPER_BOUND_NAME, IMAGE_TOKENS_WORST_CASE
        else:
            tokenizer, label = self.tokenizers.for_encoding(price.encoding)
            images = IMAGE_TOKENS
        before, field = 0, conversation_field(body)
        if counted is not None:
            if tokenizer.name not in counted.tokens:
                raise PrefixNotCounted(tokenizer.name)
            before, field = counted.tokens[tokenizer.name], counted.field
        total, parts = _count_input(body, tokenizer, self.cache, images)
        raw_input = before + total
        input_tokens = raw_input if worst_case else corrected(raw_input, price)
        conversation_tokens = before + parts.get(field, 0) if field else 0
        return TokenEstimate(
            input_tokens, output_tokens, label, field, conversation_tokens, tokenizer.name
        )

    def count_text(self, text: str, price: ModelPrice) -> int:
        """Tokens of a model's output text (a stream the provider never gave usage for)."""
        if not text:
            return 0
        tokenizer, _ = self.tokenizers.for_encoding(price.encoding)
        return corrected(tokenizer.count(text), price)

    @staticmethod
    def count_length(chars: int, price: ModelPrice) -> int:
        """Tokens of text known only by its length (past what is kept for counting)."""
        return corrected(HeuristicTokenizer.count_bytes(chars), price) if chars else 0

    def estimate_from_length(
        self, body_length: int, price: ModelPrice, worst_case: bool = False
    ) -> TokenEstimate:
        """For a body that cannot be read (cut short by Envoy, or not JSON)."""
        if worst_case:
            output = uncapped_output_tokens(price, worst_case=True)
            return TokenEstimate(body_length, output, UPPER_BOUND_NAME)
        return TokenEstimate(
            input_tokens=corrected(HeuristicTokenizer.count_bytes(body_length), price),
            output_tokens=price.default_output_tokens,
            estimator=HEURISTIC_NAME,
        )


_BYTE_BOUND = ByteBoundTokenizer()
