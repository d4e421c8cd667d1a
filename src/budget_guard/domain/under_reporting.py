"""When a usage report is far below what the guard itself counted: a lying application.

The estimate of a checked request has two parts. Its completion part is a cap
(``max_tokens``, or the model's default): an answer may legitimately use a fraction of
it, so it says nothing about a report. Its prompt part is counted by the guard from the
request body, in the model's encoding (or a fallback): an honest report of the same
model carries at least about as many prompt tokens. So the rule judges the prompt only:

- a report in tokens is *below the estimate* when its prompt tokens (input, cache
  reads and cache writes) are fewer than the counted prompt divided by the
  estimator's slack: 2 for a tokenizer's count (foreign encodings, message
  framing), 4 for the bytes/4 heuristic, 8 for a byte upper bound (one token per byte);
- a report as a cost is below the estimate when the cost is less than the counted
  prompt, so divided, priced at the model's cheapest input rate (cache reads).

Prompts of fewer than ``MIN_JUDGED_TOKENS`` counted tokens are not judged: there the
formats' framing overheads differ by as much as the prompt itself.
"""

from __future__ import annotations

from typing import NamedTuple

from budget_guard.domain.pricing import TOKENS_PER_MILLION, ModelPrice, Usage
from budget_guard.domain.tokens import HEURISTIC_NAME, UPPER_BOUND_NAME

MIN_JUDGED_TOKENS = 32
_SLACK = {HEURISTIC_NAME: 4, UPPER_BOUND_NAME: 8}
TOKENIZER_SLACK = 2


class CountedPrompt(NamedTuple):  # one per allowed check: a NamedTuple is cheap
    """What the guard counted of a request's prompt when it checked it."""

    model: str | None
    prompt_tokens: int
    estimator: str
    price: ModelPrice


def slack(estimator: str) -> int:
    return _SLACK.get(estimator, TOKENIZER_SLACK)


def reported_prompt_tokens(usage: Usage) -> int:
    return usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens


def is_below_estimate(counted: CountedPrompt, usage: Usage | None, cost_micros: int) -> bool:
    """The rule above, for a report of ``usage`` (tokens) or else ``cost_micros``."""
    if counted.prompt_tokens < MIN_JUDGED_TOKENS:
        return False
    floor_divisor = slack(counted.estimator)
    if usage is not None:
        return reported_prompt_tokens(usage) * floor_divisor < counted.prompt_tokens
    price = counted.price
    cheapest = min(price.input_micros_per_million, price.cached_input_micros_per_million)
    return cost_micros * floor_divisor * TOKENS_PER_MILLION < counted.prompt_tokens * cheapest
