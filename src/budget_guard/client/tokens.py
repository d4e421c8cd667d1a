"""Token counts on the application's side: a request's estimate before the call, and
the output of a stream that ended without usage (counted as the webhook counts input:
the model's tiktoken encoding, its fallbacks, and the family's correction)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from budget_guard.domain.pricing import ModelPrice, PriceTable
from budget_guard.domain.tokens import (
    FALLBACK_ENCODING,
    MessageTokenCache,
    RequestEstimator,
    TokenEstimate,
    TokenizerSet,
    corrected,
)
from budget_guard.loaders.tokenizers import load_tokenizers


class TokenCounter:
    """One per backend; tiktoken's encodings are loaded on first use."""

    def __init__(self, prices: PriceTable, tokenizers: TokenizerSet | None = None) -> None:
        self.prices = prices
        self._tokenizers = tokenizers

    @functools.cached_property
    def estimator(self) -> RequestEstimator:
        tokenizers = self._tokenizers or load_tokenizers().tokenizers
        return RequestEstimator(tokenizers, MessageTokenCache())

    def estimate(
        self, request: Mapping[str, Any], price: ModelPrice, worst_case: bool = False
    ) -> TokenEstimate:
        return self.estimator.estimate(request, price, worst_case)

    def input_tokens(self, request: Mapping[str, Any], model: str) -> int:
        price = self.prices.lookup(model)
        if price is None:
            return self.estimate(request, _unpriced(model)).input_tokens
        return self.estimate(request, price).input_tokens

    def output_tokens(self, text: str, model: str) -> int:
        price = self.prices.lookup(model) or _unpriced(model)
        tokenizer, _ = self.estimator.tokenizers.for_encoding(price.encoding)
        return corrected(tokenizer.count(text), price)


def _unpriced(model: str) -> ModelPrice:
    """Counting only: a model with no price is counted in the fallback encoding."""
    return ModelPrice(model, "", 0, 0, 0, 0, encoding=FALLBACK_ENCODING)
