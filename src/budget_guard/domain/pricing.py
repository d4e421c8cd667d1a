"""What a request costs: model prices, token usage, and the unknown-model policy.

Prices are held as integer micro-USD per 1M tokens, so a cost is one integer sum
divided once, rounded up: a request is never free by accident, and never by rounding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from budget_guard.domain.default_prices import DEFAULT_PRICE_TABLE
from budget_guard.domain.money import InvalidAmount, parse_usd

TOKENS_PER_MILLION = 1_000_000
DEFAULT_OUTPUT_TOKENS = 500
_PROVIDER_PREFIXES = ("openai/", "anthropic/", "google/", "gemini/", "models/", "vertex_ai/")
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")
_LOOKUP_CACHE_SIZE = 4096


class UnknownModelAction(StrEnum):
    DENY = "Deny"
    PRICE_AS = "PriceAs"


@dataclass(frozen=True, slots=True)
class UnknownModelPolicy:
    action: UnknownModelAction = UnknownModelAction.DENY
    model: str | None = None  # the model to price as, for PriceAs


class UnknownModelError(LookupError):
    """A model with no price, under the ``Deny`` policy."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"model {model!r} has no price: add it to the price table (--pricing FILE) "
            "or set unknownModelPolicy to PriceAs a known model"
        )
        self.model = model


class Usage(NamedTuple):  # per request: a NamedTuple is cheap to build
    """Tokens one call used, split by how each kind is priced."""

    input_tokens: int = 0  # not served from cache
    output_tokens: int = 0
    cached_input_tokens: int = 0  # cache reads
    cache_write_tokens: int = 0  # cache writes (Anthropic cache creation)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices in micro-USD per 1M tokens, and how to count its tokens."""

    model: str
    provider: str
    input_micros_per_million: int
    output_micros_per_million: int
    cached_input_micros_per_million: int
    cache_write_micros_per_million: int
    max_output_tokens: int | None = None
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    encoding: str = "cl100k_base"
    token_correction: Decimal = Decimal(1)

    def cost_micros(self, usage: Usage) -> int:
        """The exact cost of ``usage``, rounded up to a whole micro-USD."""
        numerator = (
            usage.input_tokens * self.input_micros_per_million
            + usage.output_tokens * self.output_micros_per_million
            + usage.cached_input_tokens * self.cached_input_micros_per_million
            + usage.cache_write_tokens * self.cache_write_micros_per_million
        )
        return -(-numerator // TOKENS_PER_MILLION)

    def cap_output_tokens(self, requested: int) -> int:
        if self.max_output_tokens is None:
            return requested
        return min(requested, self.max_output_tokens)


class PricedModel(NamedTuple):  # per request
    """The price used for a request's model, and whether the unknown-model policy chose it."""

    requested: str
    price: ModelPrice
    by_policy: bool = False


@dataclass(frozen=True)
class PriceTable:
    models: Mapping[str, ModelPrice]
    as_of: str = ""
    source: str = ""
    unknown_model_policy: UnknownModelPolicy = UnknownModelPolicy()
    _cache: dict[str, ModelPrice | None] = field(default_factory=dict, compare=False, repr=False)

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of ``model``: exact name, then without provider prefix and date
        suffix (``openai/gpt-4o-2024-08-06`` -> ``gpt-4o``), then the longest known
        name it extends at a ``-`` boundary (``gpt-4o-mini-tts`` -> ``gpt-4o-mini``)."""
        if model in self._cache:
            return self._cache[model]
        found = self._find(model)
        if len(self._cache) >= _LOOKUP_CACHE_SIZE:
            self._cache.clear()
        self._cache[model] = found
        return found

    def _find(self, model: str) -> ModelPrice | None:
        exact = self.models.get(model)
        if exact is not None:
            return exact
        name = model.lower()
        for prefix in _PROVIDER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        name = _DATE_SUFFIX.sub("", name)
        if name in self.models:
            return self.models[name]
        extended = [known for known in self.models if name.startswith(known + "-")]
        return self.models[max(extended, key=len)] if extended else None

    def price(self, model: str) -> PricedModel:
        """The price for ``model``, applying the unknown-model policy; never free."""
        found = self.lookup(model)
        if found is not None:
            return PricedModel(model, found)
        policy = self.unknown_model_policy
        if policy.action is UnknownModelAction.PRICE_AS and policy.model is not None:
            stand_in = self.lookup(policy.model)
            if stand_in is not None:
                return PricedModel(model, stand_in, by_policy=True)
        raise UnknownModelError(model)

    def merged_with(self, override: PriceTable) -> PriceTable:
        """This table with ``override``'s models added or replaced, and its policy."""
        return PriceTable(
            models=MappingProxyType({**self.models, **override.models}),
            as_of=override.as_of or self.as_of,
            source=override.source or self.source,
            unknown_model_policy=override.unknown_model_policy,
        )


def _rate(value: object, field: str, default: int | None = None) -> int:
    if value is None:
        if default is None:
            raise ValueError(f'{field}: is required (USD per 1M tokens, e.g. "2.50")')
        return default
    try:
        return parse_usd(value, field, allow_zero=True)
    except InvalidAmount as error:
        raise ValueError(str(error)) from None


def _positive_int(value: object, field: str, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field}: must be a whole number of tokens, got {value!r}")
    return value


def _parse_model(name: str, raw: Mapping[str, Any], where: str) -> ModelPrice:
    input_rate = _rate(raw.get("inputPerMillion"), f"{where}.inputPerMillion")
    correction_text = raw.get("tokenCorrection", "1")
    try:
        correction = Decimal(str(correction_text))
    except InvalidOperation:
        correction = Decimal(0)
    if not correction.is_finite() or not Decimal("0.1") <= correction <= Decimal(10):
        raise ValueError(
            f"{where}.tokenCorrection: must be a decimal from 0.1 to 10, got {correction_text!r}"
        )
    default_output = _positive_int(
        raw.get("defaultOutputTokens"), f"{where}.defaultOutputTokens", DEFAULT_OUTPUT_TOKENS
    )
    assert default_output is not None
    return ModelPrice(
        model=name,
        provider=str(raw.get("provider", "")),
        input_micros_per_million=input_rate,
        output_micros_per_million=_rate(
            raw.get("outputPerMillion"), f"{where}.outputPerMillion", default=0
        ),
        cached_input_micros_per_million=_rate(
            raw.get("cachedInputPerMillion"), f"{where}.cachedInputPerMillion", default=input_rate
        ),
        cache_write_micros_per_million=_rate(
            raw.get("cacheWritePerMillion"), f"{where}.cacheWritePerMillion", default=input_rate
        ),
        max_output_tokens=_positive_int(
            raw.get("maxOutputTokens"), f"{where}.maxOutputTokens", None
        ),
        default_output_tokens=default_output,
        encoding=str(raw.get("encoding", "cl100k_base")),
        token_correction=correction,
    )


def _per_token_to_per_million(value: object) -> str | None:
    if value is None:
        return None
    amount = (Decimal(str(value)) * TOKENS_PER_MILLION).quantize(Decimal("0.000001"))
    return format(amount, "f")


def _from_litellm(document: Mapping[str, Any]) -> dict[str, Any]:
    """LiteLLM's price map (USD per token) in this table's shape (USD per 1M tokens)."""
    models: dict[str, Any] = {}
    for name, entry in document.items():
        if not isinstance(entry, Mapping) or "input_cost_per_token" not in entry:
            continue  # e.g. LiteLLM's "sample_spec"
        models[name] = {
            "provider": entry.get("litellm_provider", ""),
            "inputPerMillion": _per_token_to_per_million(entry.get("input_cost_per_token")),
            "outputPerMillion": _per_token_to_per_million(entry.get("output_cost_per_token")),
            "cachedInputPerMillion": _per_token_to_per_million(
                entry.get("cache_read_input_token_cost")
            ),
            "cacheWritePerMillion": _per_token_to_per_million(
                entry.get("cache_creation_input_token_cost")
            ),
            "maxOutputTokens": entry.get("max_output_tokens"),
        }
    return {"models": models, "source": "litellm price map"}


def parse_price_table(document: Mapping[str, Any]) -> PriceTable:
    """A price table document: this project's shape, or LiteLLM's price map."""
    if "models" not in document and any(
        isinstance(entry, Mapping) and "input_cost_per_token" in entry
        for entry in document.values()
    ):
        document = _from_litellm(document)
    raw_models = document.get("models")
    if not isinstance(raw_models, Mapping):
        raise ValueError("models: must map model names to their prices")
    models = {
        str(name): _parse_model(str(name), raw, f"models.{name}")
        for name, raw in raw_models.items()
        if isinstance(raw, Mapping)
    }
    policy = _parse_policy(document.get("unknownModelPolicy"))
    return PriceTable(
        models=MappingProxyType(models),
        as_of=str(document.get("asOf", "")),
        source=str(document.get("source", "")),
        unknown_model_policy=policy,
    )


def _parse_policy(raw: object) -> UnknownModelPolicy:
    if raw is None:
        return UnknownModelPolicy()
    if not isinstance(raw, Mapping):
        raise ValueError("unknownModelPolicy: must be {action: Deny} or {action: PriceAs, model}")
    try:
        action = UnknownModelAction(raw.get("action", "Deny"))
    except ValueError:
        raise ValueError(
            f"unknownModelPolicy.action: must be Deny or PriceAs, got {raw.get('action')!r}"
        ) from None
    model = raw.get("model")
    if action is UnknownModelAction.PRICE_AS and not (isinstance(model, str) and model):
        raise ValueError("unknownModelPolicy.model: PriceAs needs the model to price as")
    return UnknownModelPolicy(action, model if isinstance(model, str) else None)


def default_price_table() -> PriceTable:
    return parse_price_table(DEFAULT_PRICE_TABLE)


def build_price_table(override: Mapping[str, Any] | None = None) -> PriceTable:
    """The default table, with ``override`` (a parsed price file) merged over it.

    A PriceAs policy must name a model the merged table knows.
    """
    table = default_price_table()
    if override is not None:
        table = table.merged_with(parse_price_table(override))
    policy = table.unknown_model_policy
    if policy.action is UnknownModelAction.PRICE_AS and table.lookup(policy.model or "") is None:
        raise ValueError(f"unknownModelPolicy.model: {policy.model!r} is not in the price table")
    return table
