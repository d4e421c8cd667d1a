"""The under-reporting rule: only the prompt, which the guard counted, is judged."""

from __future__ import annotations

from budget_guard.domain.pricing import ModelPrice, Usage
from budget_guard.domain.tokens import HEURISTIC_NAME, UPPER_BOUND_NAME
from budget_guard.domain.under_reporting import CountedPrompt, is_below_estimate

PRICE = ModelPrice("m", "openai", 2_500_000, 10_000_000, 1_250_000, 0)


def counted(tokens: int, estimator: str = "o200k_base") -> CountedPrompt:
    return CountedPrompt("m", tokens, estimator, PRICE)


def test_a_report_of_fewer_prompt_tokens_than_half_the_count_is_below() -> None:
    assert is_below_estimate(counted(1000), Usage(input_tokens=499), 0)
    assert not is_below_estimate(counted(1000), Usage(input_tokens=500), 0)
    # Cached prompt tokens are prompt tokens; a short completion is no lie.
    assert not is_below_estimate(counted(1000), Usage(100, 1, cached_input_tokens=900), 0)


def test_the_slack_follows_the_estimator() -> None:
    assert not is_below_estimate(counted(1000, HEURISTIC_NAME), Usage(input_tokens=300), 0)
    assert is_below_estimate(counted(1000, HEURISTIC_NAME), Usage(input_tokens=249), 0)
    assert not is_below_estimate(counted(1000, UPPER_BOUND_NAME), Usage(input_tokens=125), 0)
    assert is_below_estimate(counted(1000, UPPER_BOUND_NAME), Usage(input_tokens=124), 0)


def test_a_cost_is_judged_at_the_cheapest_input_rate() -> None:
    # 1000 prompt tokens at the cache-read rate, halved: 625 micro-USD.
    assert is_below_estimate(counted(1000), None, 624)
    assert not is_below_estimate(counted(1000), None, 625)
    assert is_below_estimate(counted(1000), None, 0)


def test_small_prompts_are_not_judged() -> None:
    assert not is_below_estimate(counted(31), Usage(), 0)
    assert is_below_estimate(counted(32), Usage(), 0)
