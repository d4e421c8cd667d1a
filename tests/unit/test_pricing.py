from __future__ import annotations

import pytest

from budget_guard.domain.pricing import (
    UnknownModelError,
    Usage,
    build_price_table,
    default_price_table,
    parse_price_table,
)

TABLE = default_price_table()


def test_default_table_has_current_models_of_each_vendor_and_an_as_of_date() -> None:
    assert TABLE.as_of
    providers = {price.provider for price in TABLE.models.values()}
    assert {"openai", "anthropic", "google"} <= providers
    gpt4o = TABLE.models["gpt-4o"]
    assert (gpt4o.input_micros_per_million, gpt4o.output_micros_per_million) == (
        2_500_000,
        10_000_000,
    )
    assert gpt4o.cached_input_micros_per_million == 1_250_000
    assert gpt4o.encoding == "o200k_base"
    assert TABLE.models["claude-sonnet-4-5"].encoding == "cl100k_base"
    assert TABLE.models["claude-sonnet-4-5"].token_correction > 1


@pytest.mark.parametrize(
    ("asked", "priced"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("GPT-4o", "gpt-4o"),
    ],
)
def test_model_names_are_normalised(asked: str, priced: str) -> None:
    found = TABLE.lookup(asked)
    assert found is not None and found.model == priced


def test_costs_are_exact_integers_rounded_up() -> None:
    gpt4o = TABLE.models["gpt-4o"]
    # 1,000 input + 500 output tokens: 1000 * 2.5 + 500 * 10 micro-USD.
    assert gpt4o.cost_micros(Usage(input_tokens=1000, output_tokens=500)) == 7_500
    # One token of gpt-4o-mini input is 0.15 micro-USD: rounded up, never free.
    assert TABLE.models["gpt-4o-mini"].cost_micros(Usage(input_tokens=1)) == 1
    assert TABLE.models["gpt-4o-mini"].cost_micros(Usage()) == 0
    claude = TABLE.models["claude-sonnet-4-5"]
    usage = Usage(
        input_tokens=100, output_tokens=10, cached_input_tokens=1000, cache_write_tokens=200
    )
    assert claude.cost_micros(usage) == 100 * 3 + 10 * 15 + 1000 * 3 // 10 + 200 * 375 // 100


def test_unknown_models_are_denied_by_default() -> None:
    with pytest.raises(UnknownModelError, match="'mystery-1' has no price"):
        TABLE.price("mystery-1")


def test_unknown_models_can_be_priced_as_a_named_model() -> None:
    table = build_price_table(
        {"models": {}, "unknownModelPolicy": {"action": "PriceAs", "model": "gpt-4o"}}
    )
    priced = table.price("mystery-1")
    assert priced.by_policy and priced.price.model == "gpt-4o"
    assert not table.price("gpt-4o-mini").by_policy


def test_override_adds_and_replaces_models() -> None:
    table = build_price_table(
        {
            "asOf": "2026-12-01",
            "models": {
                "gpt-4o": {"inputPerMillion": "2.00", "outputPerMillion": "8.00"},
                "in-house-llm": {
                    "inputPerMillion": "0.10",
                    "outputPerMillion": "0.10",
                    "maxOutputTokens": 4096,
                },
            },
        }
    )
    assert table.as_of == "2026-12-01"
    assert table.models["gpt-4o"].input_micros_per_million == 2_000_000
    assert table.models["gpt-4o"].cached_input_micros_per_million == 2_000_000  # defaults to input
    assert table.models["in-house-llm"].max_output_tokens == 4096
    assert "claude-haiku-4-5" in table.models


def test_litellm_price_maps_are_accepted() -> None:
    table = parse_price_table(
        {
            "sample_spec": {"max_tokens": "set to max"},
            "my-model": {
                "input_cost_per_token": 2.5e-06,
                "output_cost_per_token": 1e-05,
                "cache_read_input_token_cost": 1.25e-06,
                "max_output_tokens": 16384,
                "litellm_provider": "openai",
            },
        }
    )
    price = table.models["my-model"]
    assert price.input_micros_per_million == 2_500_000
    assert price.output_micros_per_million == 10_000_000
    assert price.cached_input_micros_per_million == 1_250_000


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"models": {"m": {"outputPerMillion": "1"}}}, "models.m.inputPerMillion: is required"),
        (
            {"models": {"m": {"inputPerMillion": "-1"}}},
            "models.m.inputPerMillion: must be zero or positive",
        ),
        (
            {"models": {"m": {"inputPerMillion": 1.5}}},
            "models.m.inputPerMillion: must be a decimal string",
        ),
        ({"models": {"m": {"inputPerMillion": "1", "tokenCorrection": "99"}}}, "tokenCorrection"),
        ({"models": {"m": {"inputPerMillion": "1", "maxOutputTokens": -5}}}, "maxOutputTokens"),
        ({"models": {}, "unknownModelPolicy": {"action": "Free"}}, "unknownModelPolicy.action"),
        ({"models": {}, "unknownModelPolicy": {"action": "PriceAs"}}, "unknownModelPolicy.model"),
        (
            {"models": {}, "unknownModelPolicy": {"action": "PriceAs", "model": "nope"}},
            "'nope' is not in the price table",
        ),
        ({"models": []}, "models: must map"),
    ],
)
def test_bad_price_files_name_the_field(document: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_price_table(document)
