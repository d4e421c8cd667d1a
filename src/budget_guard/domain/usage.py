"""Reported usage of a finished call, in any vendor's shape, as tokens or a cost.

Accepted shapes of ``usage``:

- OpenAI chat / completions: ``prompt_tokens``, ``completion_tokens``, and
  ``prompt_tokens_details.cached_tokens`` (included in ``prompt_tokens``).
- OpenAI Responses: ``input_tokens``, ``output_tokens``, and
  ``input_tokens_details.cached_tokens`` (included in ``input_tokens``).
- Anthropic: ``input_tokens``, ``output_tokens``, ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` (both *not* included in ``input_tokens``).
- Gemini: ``usageMetadata`` (given as ``usage`` or beside it) with
  ``promptTokenCount``, ``candidatesTokenCount``, ``thoughtsTokenCount`` and
  ``cachedContentTokenCount`` (included in ``promptTokenCount``).

or a ``cost_usd`` instead of ``usage``. Errors are ``ValueError``s naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from budget_guard.domain.money import MAX_AMOUNT_USD, MICROS_PER_USD
from budget_guard.domain.pricing import Usage
from budget_guard.domain.request_ids import REQUEST_ID_RULE, is_valid_request_id

_MAX_TOKENS = 10**12


@dataclass(frozen=True, slots=True)
class UsageReport:
    """One settlement: what the request used (tokens, or a cost already computed)."""

    request_id: str
    model: str | None
    usage: Usage | None = None
    cost_micros: int | None = None


def _tokens(raw: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> int:
    value = raw.get(name)
    if value is None:
        if required:
            raise ValueError(f"{where}.{name}: is required")
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        raise ValueError(f"{where}.{name}: must be a whole number of tokens >= 0, got {value!r}")
    return value


def _details(raw: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}.{name}: must be an object, got {value!r}")
    return value


def _cached_within(total: int, cached: int, where: str, total_name: str, cached_name: str) -> int:
    if cached > total:
        raise ValueError(
            f"{where}.{cached_name}: {cached} cached tokens exceed {total_name} {total}"
        )
    return total - cached


def parse_usage(raw: object, where: str = "usage") -> Usage:
    """Any supported vendor's usage object as ``Usage``."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be an object with token counts, got {raw!r}")
    if "usageMetadata" in raw:
        return parse_usage(raw["usageMetadata"], f"{where}.usageMetadata")
    if "promptTokenCount" in raw or "candidatesTokenCount" in raw:  # Gemini
        prompt = _tokens(raw, "promptTokenCount", where)
        cached = _tokens(raw, "cachedContentTokenCount", where)
        output = _tokens(raw, "candidatesTokenCount", where) + _tokens(
            raw, "thoughtsTokenCount", where
        )
        uncached = _cached_within(
            prompt, cached, where, "promptTokenCount", "cachedContentTokenCount"
        )
        return Usage(input_tokens=uncached, output_tokens=output, cached_input_tokens=cached)
    if "prompt_tokens" in raw or "completion_tokens" in raw:  # OpenAI chat / completions
        prompt = _tokens(raw, "prompt_tokens", where)
        details = _details(raw, "prompt_tokens_details", where)
        cached = _tokens(details, "cached_tokens", f"{where}.prompt_tokens_details")
        uncached = _cached_within(
            prompt, cached, where, "prompt_tokens", "prompt_tokens_details.cached_tokens"
        )
        output = _tokens(raw, "completion_tokens", where)
        return Usage(input_tokens=uncached, output_tokens=output, cached_input_tokens=cached)
    if "input_tokens" in raw or "output_tokens" in raw:
        input_tokens = _tokens(raw, "input_tokens", where)
        output = _tokens(raw, "output_tokens", where)
        if "cache_read_input_tokens" in raw or "cache_creation_input_tokens" in raw:  # Anthropic
            return Usage(
                input_tokens=input_tokens,
                output_tokens=output,
                cached_input_tokens=_tokens(raw, "cache_read_input_tokens", where),
                cache_write_tokens=_tokens(raw, "cache_creation_input_tokens", where),
            )
        details = _details(raw, "input_tokens_details", where)  # OpenAI Responses
        cached = _tokens(details, "cached_tokens", f"{where}.input_tokens_details")
        uncached = _cached_within(
            input_tokens, cached, where, "input_tokens", "input_tokens_details.cached_tokens"
        )
        return Usage(input_tokens=uncached, output_tokens=output, cached_input_tokens=cached)
    raise ValueError(
        f"{where}: no token counts found; expected OpenAI (prompt_tokens, completion_tokens), "
        "Anthropic or Responses (input_tokens, output_tokens) or Gemini (usageMetadata) fields"
    )


def parse_cost_usd(value: object, where: str = "cost_usd") -> int:
    """A reported cost as micro-USD, rounded up to a whole micro-USD."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: must be a decimal amount of USD, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{where}: must be a decimal amount of USD, got {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT_USD:
        raise ValueError(
            f"{where}: must be a finite amount from 0 to {MAX_AMOUNT_USD}, got {value!r}"
        )
    return math.ceil(amount * MICROS_PER_USD)


def parse_request_id(value: object, where: str = "request_id") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: is required (the x-budget-request-id of the check)")
    if not is_valid_request_id(value):
        raise ValueError(f"{where}: must be {REQUEST_ID_RULE}")
    return value


def parse_usage_report(raw: object, where: str = "") -> UsageReport:
    """One item of ``POST /v1/usage``."""
    prefix = f"{where}." if where else ""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where or 'body'}: must be an object with request_id and usage")
    request_id = parse_request_id(raw.get("request_id"), f"{prefix}request_id")
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise ValueError(f"{prefix}model: must be the model's name, got {model!r}")
    if "cost_usd" in raw:
        cost = parse_cost_usd(raw["cost_usd"], f"{prefix}cost_usd")
        return UsageReport(request_id, model, cost_micros=cost)
    if "usage" in raw:
        usage = parse_usage(raw["usage"], f"{prefix}usage")
    elif "usageMetadata" in raw:
        usage = parse_usage(raw["usageMetadata"], f"{prefix}usageMetadata")
    else:
        raise ValueError(f"{prefix}usage: is required (token counts), or give cost_usd")
    if model is None:
        raise ValueError(f"{prefix}model: is required to price token usage (or give cost_usd)")
    return UsageReport(request_id, model, usage=usage)
