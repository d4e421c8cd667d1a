"""Ratios as percentages for people (``72.5 %``), from exact fractions: no floats."""

from __future__ import annotations

from fractions import Fraction


def percent_text(value: Fraction, decimals: int = 1, *, unit: str = " %") -> str:
    """``Fraction(725, 1000)`` -> ``"72.5 %"``; rounded half to even at ``decimals``."""
    scaled = round(value * 100 * 10**decimals)
    whole, part = divmod(abs(scaled), 10**decimals)
    sign = "-" if scaled < 0 else ""
    number = f"{whole}.{part:0{decimals}d}" if decimals else f"{whole}"
    return f"{sign}{number}{unit}"
