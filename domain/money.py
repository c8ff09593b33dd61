"""Money: integer minor units with a currency, and the one rounding rule.

Every division of money in the product goes through `round_half_up`, so there is one
place that decides what happens to half a fen.
"""

from __future__ import annotations

import re
from decimal import Decimal

# ISO 4217 currencies the lender books in, with their minor-unit exponent.
CURRENCY_EXPONENT: dict[str, int] = {
    "CNY": 2,
    "HKD": 2,
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "SGD": 2,
    "JPY": 0,
    "KRW": 0,
}
CURRENCY_SYMBOL: dict[str, str] = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


class MoneyError(ValueError):
    """A bad amount or currency; the message names the field."""


def check_currency(currency: str, field: str = "currency") -> str:
    if currency not in CURRENCY_EXPONENT:
        known = ", ".join(sorted(CURRENCY_EXPONENT))
        raise MoneyError(f"{field}: unknown currency {currency!r} (known: {known})")
    return currency


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, halves away from zero.

    Exact integer arithmetic: callers express a rate calculation as one fraction
    (e.g. principal * bps * days / (10_000 * 360)) and round once.
    """
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = -1 if numerator < 0 else 1
    q, r = divmod(abs(numerator), denominator)
    if 2 * r >= denominator:
        q += 1
    return sign * q


# An amount as people write it: ASCII digits, at most one decimal point, and either no
# grouping at all or thousands grouped by "," (or "_") in groups of exactly three, the
# first group 1-3 digits without a leading zero: 1234.56, 1,234.56, 12,345,678, 1_000.
_AMOUNT = re.compile(
    r"(?P<int>[0-9]*|[1-9][0-9]{0,2}(?:,[0-9]{3})+|[1-9][0-9]{0,2}(?:_[0-9]{3})+)"
    r"(?:\.(?P<frac>[0-9]*))?"
)


def parse_amount(text: str, currency: str = "CNY", field: str = "amount") -> int:
    """'1234.56' -> 123456 minor units, exactly (no floats). Refuses more decimals than
    the currency has, signs, exponents and anything that is not a plain number.

    Thousands may be grouped with commas, and then only as thousands are grouped
    (1,234.56, 12,345,678): a comma anywhere else is refused, never dropped, because
    '12,50' (a decimal comma) or '1,2,3' read by dropping commas would be 1250 or 123,
    a hundred times what was meant."""
    check_currency(currency)
    cleaned = text.strip()
    match = _AMOUNT.fullmatch(cleaned)
    if match is None or not (match["int"] or match["frac"]):
        if "," in cleaned:
            raise MoneyError(
                f"{field}: {text!r} is ambiguous: a comma may only group thousands (1,234.56); "
                "write the amount with a decimal point and no grouping, e.g. 1234.50"
            )
        raise MoneyError(f"{field}: {text!r} is not an amount like 1234.56")
    value = Decimal(cleaned.replace(",", "").replace("_", ""))
    exponent = CURRENCY_EXPONENT[currency]
    scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{field}: {text!r} has more than {exponent} decimals for {currency}")
    return int(scaled)


def format_amount(
    minor: int, currency: str = "CNY", symbol: bool = False, *, language: str | None = None
) -> str:
    """The one money formatter: minor units -> text, exactly (no floats).

    123456 CNY -> '1,234.56'; symbol=True -> '¥1,234.56' (the ISO code where the
    currency has no symbol: 'KRW 1,234,567'). With a message `language`: zh-CN
    '¥1,234.56', en (and any other) 'CNY 1,234.56'."""
    exponent = CURRENCY_EXPONENT[check_currency(currency)]
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 10**exponent)
    body = f"{units:,}" + (f".{cents:0{exponent}d}" if exponent else "")
    if language is not None:
        # zh-CN leads with the local symbol (HK$ / US$ / JP¥ where a bare $ or ¥ would be
        # ambiguous next to 人民币); every other language with the ISO code.
        local = {"CNY": "¥", "HKD": "HK$", "USD": "US$", "EUR": "€", "JPY": "JP¥"}
        prefix = local.get(currency) if language == "zh-CN" else None
        return f"{sign}{prefix}{body}" if prefix else f"{sign}{currency} {body}"
    prefix = CURRENCY_SYMBOL.get(currency, "") if symbol else ""
    if symbol and not prefix:
        return f"{sign}{currency} {body}"
    return f"{sign}{prefix}{body}"


def require_positive(amount: int, field: str = "amount") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise MoneyError(f"{field}: must be an integer number of minor units")
    if amount <= 0:
        raise MoneyError(f"{field}: must be greater than zero (got {amount})")
    return amount
