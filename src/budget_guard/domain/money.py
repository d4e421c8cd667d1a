"""Money is integer micro-USD (1 USD = 1,000,000) from the manifest to Redis and back.

Amounts enter as decimal strings (never floats, which cannot hold a cent exactly)
and leave as decimal strings; everything in between is ``int``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000
MAX_DECIMALS = 6
# Lua numbers are doubles: every amount the ledger compares must stay below 2**53.
# 100 million USD x a seasonal multiplier of at most 10 keeps a wide margin.
MAX_AMOUNT_USD = Decimal(100_000_000)
_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


class InvalidAmount(ValueError):
    """A money amount that cannot be used; the message names the field."""


def parse_usd(value: object, field: str, *, allow_zero: bool = False) -> int:
    """A decimal USD amount (string or int) as integer micro-USD.

    Raises ``InvalidAmount`` naming ``field`` for floats, NaN, infinities,
    negative (or zero, unless allowed) amounts, more than six decimals, and
    amounts above ``MAX_AMOUNT_USD``.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        hint = ' (write it as a quoted string, e.g. "12.50")' if isinstance(value, float) else ""
        raise InvalidAmount(f"{field}: must be a decimal string of USD{hint}, got {value!r}")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidAmount(f"{field}: {value!r} is not a decimal number of USD") from None
    if not amount.is_finite():
        raise InvalidAmount(f"{field}: must be a finite amount, got {value!r}")
    if amount < 0 or (amount == 0 and not allow_zero):
        expected = "zero or positive" if allow_zero else "positive"
        raise InvalidAmount(f"{field}: must be {expected}, got {value!r}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
        raise InvalidAmount(f"{field}: at most {MAX_DECIMALS} decimals, got {value!r}")
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value.strip()):
        raise InvalidAmount(f'{field}: write plain decimal notation like "12.50", got {value!r}')
    if amount > MAX_AMOUNT_USD:
        raise InvalidAmount(f"{field}: at most {MAX_AMOUNT_USD} USD, got {value!r}")
    return int(amount * MICROS_PER_USD)


def format_usd(micros: int) -> str:
    """``12500000`` -> ``"12.50"``; ``1234`` -> ``"0.001234"``: at least cents, no float."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_USD)
    digits = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def micros_to_decimal(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-MAX_DECIMALS)
