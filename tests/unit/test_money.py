from __future__ import annotations

from decimal import Decimal

import pytest

from budget_guard.domain.money import InvalidAmount, format_usd, parse_usd


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("100", 100_000_000),
        ("12.50", 12_500_000),
        ("0.000001", 1),
        ("0.1", 100_000),
        (" 7.25 ", 7_250_000),
        (42, 42_000_000),
        (Decimal("1.5"), 1_500_000),
        ("99999999.999999", 99_999_999_999_999),
    ],
)
def test_parses_decimal_usd_to_integer_micros(text: object, micros: int) -> None:
    assert parse_usd(text, "spec.limit") == micros


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "spec.limit: must be positive"),
        ("0", "spec.limit: must be positive"),
        ("NaN", "spec.limit: must be a finite amount"),
        ("Infinity", "spec.limit: must be a finite amount"),
        ("-Infinity", "spec.limit: must be a finite amount"),
        ("1.0000001", "spec.limit: at most 6 decimals"),
        ("1e3", "spec.limit: write plain decimal notation"),
        ("abc", "spec.limit: 'abc' is not a decimal number"),
        ("", "spec.limit: '' is not a decimal number"),
        (12.5, "spec.limit: must be a decimal string of USD (write it as a quoted string"),
        (True, "spec.limit: must be a decimal string of USD"),
        (None, "spec.limit: must be a decimal string of USD"),
        ("100000001", "spec.limit: at most 100000000 USD"),
    ],
)
def test_rejects_bad_amounts_naming_the_field(value: object, message: str) -> None:
    with pytest.raises(InvalidAmount) as caught:
        parse_usd(value, "spec.limit")
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)


def test_zero_is_allowed_where_asked() -> None:
    assert parse_usd("0", "outputPerMillion", allow_zero=True) == 0
    with pytest.raises(InvalidAmount, match="must be zero or positive"):
        parse_usd("-0.01", "outputPerMillion", allow_zero=True)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (12_500_000, "12.50"),
        (1_234, "0.001234"),
        (0, "0.00"),
        (-2_500_000, "-2.50"),
        (1, "0.000001"),
    ],
)
def test_formats_micros_without_floats(micros: int, text: str) -> None:
    assert format_usd(micros) == text
    assert parse_usd(text.lstrip("-"), "x", allow_zero=True) == abs(micros)
