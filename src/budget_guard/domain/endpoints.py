"""Which requests are inference (priced, reserved, settled), which cost nothing, and
which API a request speaks (for the shape of its answers).

- **Priced**: the providers' inference endpoints (the table in docs/webhook.md). A
  body without a model is refused there (400): it could not be priced.
- **Free**: the providers' other endpoints (model listing, files, batches, token
  counting, fine-tuning, health): allowed without a reservation, never refused.
- **Anything else** (a gateway's own inference route, a self-hosted server): priced
  when its body names a model, free when it names none, so that no inference slips
  through a path this table does not know.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple


class Api(StrEnum):
    """The shape of a provider's requests, answers and errors."""

    OPENAI = "openai"  # chat completions, completions, embeddings, Responses (and compatibles)
    ANTHROPIC = "anthropic"  # Messages
    GEMINI = "gemini"  # generateContent, streamGenerateContent


class Pricing(StrEnum):
    PRICED = "priced"
    FREE = "free"
    BY_BODY = "by_body"  # unknown path: priced when the body names a model


class Endpoint(NamedTuple):
    pricing: Pricing
    api: Api


# Matched against the path without its query, anywhere after a gateway's own prefix
# ("/openai/v1/chat/completions" is "/v1/chat/completions").
_PRICED: tuple[tuple[re.Pattern[str], Api], ...] = (
    (re.compile(r"/v1/chat/completions$"), Api.OPENAI),
    (re.compile(r"/v1/completions$"), Api.OPENAI),
    (re.compile(r"/v1/responses$"), Api.OPENAI),
    (re.compile(r"/v1/embeddings$"), Api.OPENAI),
    (re.compile(r"/deployments/[^/]+/(chat/completions|completions|embeddings)$"), Api.OPENAI),
    (re.compile(r"/v1/messages$"), Api.ANTHROPIC),
    (re.compile(r"/models/[^/:]+:(generateContent|streamGenerateContent)$"), Api.GEMINI),
)
_FREE: tuple[tuple[re.Pattern[str], Api], ...] = (
    (re.compile(r"/v1/messages/(count_tokens|batches)(/|$)"), Api.ANTHROPIC),
    (re.compile(r"/models/[^/:]+:(countTokens|embedContent|batchEmbedContents)$"), Api.GEMINI),
    (re.compile(r"/v1(beta)?/(models|files|cachedContents|operations)(/|$)"), Api.OPENAI),
    (
        re.compile(
            r"/v1/(files|batches|uploads|fine_tuning|vector_stores|assistants|threads)(/|$)"
        ),
        Api.OPENAI,
    ),
    (re.compile(r"/(health|healthz|livez|readyz|ping)$"), Api.OPENAI),
)

PRICED_PATHS = (
    "/v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings, Azure "
    "/openai/deployments/<name>/..., /v1/messages, /models/<model>:generateContent and "
    ":streamGenerateContent"
)


def _bare(path: str) -> str:
    return path.split("?", 1)[0].rstrip("/") or "/"


def endpoint(method: str, path: str) -> Endpoint:
    return _endpoint(method.upper(), _bare(path))


def api_of(path: str) -> Api:
    """The API a path belongs to, for the shape of an answer (OpenAI by default)."""
    return _api_of(_bare(path))


# Every check classifies its path twice (pricing, then the shape of its answer); a
# gateway sends few distinct paths, and the caches are bounded against many.
@lru_cache(maxsize=1024)
def _endpoint(method: str, bare: str) -> Endpoint:
    if method == "POST":
        for pattern, api in _PRICED:
            if pattern.search(bare):
                return Endpoint(Pricing.PRICED, api)
    for pattern, api in _FREE:
        if pattern.search(bare):
            return Endpoint(Pricing.FREE, api)
    if method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return Endpoint(Pricing.FREE, _api_of(bare))
    return Endpoint(Pricing.BY_BODY, _api_of(bare))


_GEMINI_PATH = re.compile(r"/models/[^/]+:|/v1beta/")


@lru_cache(maxsize=1024)
def _api_of(bare: str) -> Api:
    if "/v1/messages" in bare:
        return Api.ANTHROPIC
    if _GEMINI_PATH.search(bare):
        return Api.GEMINI
    return Api.OPENAI
