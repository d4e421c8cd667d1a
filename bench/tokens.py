"""Token-counting benchmark: raw tokenizer throughput, and an agent loop with and
without the message cache."""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

from budget_guard.domain.pricing import default_price_table
from budget_guard.domain.tokens import MessageTokenCache, RequestEstimator, TokenizerSet

WORDS = (  # noqa: SIM905 - reads as prose
    "the budget guard counts tokens before every call so that a runaway agent loop "
    "cannot spend a month of money overnight while platform teams sleep soundly and "
    "finance reviews the chargeback report each morning with coffee and questions about "
    "which tenant used which model for which feature and why the forecast moved"
).split()


def text_of(size_bytes: int, seed: int) -> str:
    rng = random.Random(seed)  # noqa: S311 - benchmark data
    words: list[str] = []
    length = 0
    while length < size_bytes:
        word = rng.choice(WORDS)
        if rng.random() < 0.08:
            word = f"{word}, {rng.randint(0, 9999)}"
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size_bytes]


@dataclass(frozen=True)
class Throughput:
    size: str
    tokens: int
    tokens_per_second: float
    microseconds_per_prompt: float


def tokenizer_throughput(tokenizers: TokenizerSet, seconds: float = 1.0) -> list[Throughput]:
    tokenizer, _ = tokenizers.for_encoding("cl100k_base")
    results = []
    cases = [
        (label, [text_of(size, seed) for seed in range(8)])
        for label, size in (("1 KB", 1024), ("10 KB", 10 * 1024), ("100 KB", 100 * 1024))
    ]
    # The worst case for byte-pair merging: no space or punctuation to split on.
    cases.append(("1 MB, one letter, no spaces", ["x" * 1024 * 1024]))
    for label, texts in cases:
        tokens = tokenizer.count(texts[0])
        counted, rounds = 0, 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            counted += tokenizer.count(texts[rounds % len(texts)])
            rounds += 1
        elapsed = time.perf_counter() - started
        results.append(Throughput(label, tokens, counted / elapsed, elapsed / rounds * 1e6))
    return results


@dataclass(frozen=True)
class AgentLoop:
    cache: str
    turns: int
    final_input_tokens: int
    mean_us: float
    p99_us: float
    last_turn_us: float


def agent_conversation(turns: int = 100) -> list[dict[str, str]]:
    """A growing agent transcript: user ask, tool output, assistant reply per turn."""
    messages = [{"role": "system", "content": text_of(1500, 0)}]
    for turn in range(turns):
        messages.append({"role": "user", "content": text_of(300, 1000 + turn)})
        messages.append({"role": "tool", "content": text_of(1500, 2000 + turn)})
        messages.append({"role": "assistant", "content": text_of(800, 3000 + turn)})
    return messages


def agent_loop(tokenizers: TokenizerSet, turns: int = 100) -> list[AgentLoop]:
    transcript = agent_conversation(turns)
    price = default_price_table().models["gpt-4.1"]
    results = []
    for label, cache in (("without cache", None), ("with cache", MessageTokenCache())):
        estimator = RequestEstimator(tokenizers, cache)
        durations: list[float] = []
        tokens = 0
        for turn in range(1, turns + 1):
            body = {"model": "gpt-4.1", "messages": transcript[: 1 + 3 * turn]}
            started = time.perf_counter_ns()
            tokens = estimator.estimate(body, price).input_tokens
            durations.append((time.perf_counter_ns() - started) / 1000)
        ordered = sorted(durations)
        results.append(
            AgentLoop(
                cache=label,
                turns=turns,
                final_input_tokens=tokens,
                mean_us=statistics.mean(durations),
                p99_us=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                last_turn_us=durations[-1],
            )
        )
    return results
