"""Token amounts for people: ``1.5`` ILC in, wei (``int``) inside, exact both ways.

ILC has 18 decimals. Amounts are parsed with ``Decimal`` and never pass through a float, so
``0.1`` is exactly 10**17 wei; more than 18 decimals is refused rather than rounded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from inferledger.errors import AmountError

DECIMALS = 18
WEI_PER_TOKEN = 10**DECIMALS
SYMBOL = "ILC"


def parse_tokens(text: str) -> int:
    """``"1.5"`` -> 1_500_000_000_000_000_000; refuses zero, negatives, NaN and dust."""
    try:
        value = Decimal(text.strip().replace("_", ""))
    except InvalidOperation:
        raise AmountError(text, "not a number") from None
    if not value.is_finite() or value <= 0:
        raise AmountError(text, "must be a positive number of tokens")
    wei = value.scaleb(DECIMALS)
    if wei != wei.to_integral_value():
        raise AmountError(text, f"has more than {DECIMALS} decimals")
    return int(wei)


def format_tokens(wei: int, symbol: bool = True) -> str:
    """Exact: 1_500_000_000_000_000_000 -> ``1.5 ILC``; trailing zeros dropped."""
    sign = "-" if wei < 0 else ""
    whole, frac = divmod(abs(wei), WEI_PER_TOKEN)
    digits = f"{frac:0{DECIMALS}d}".rstrip("0")
    text = f"{sign}{whole:,}" + (f".{digits}" if digits else "")
    return f"{text} {SYMBOL}" if symbol else text
