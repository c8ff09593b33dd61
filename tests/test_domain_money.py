"""Money: one rounding rule, exact parsing and formatting of minor units."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.money import MoneyError, format_amount, parse_amount, require_positive, round_half_up


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (5, 2, 3),
        (-5, 2, -3),
        (7, 2, 4),
        (3, 2, 2),
        (1, 2, 1),
        (-1, 2, -1),
        (4, 3, 1),
        (5, 3, 2),
        (-4, 3, -1),
        (-5, 3, -2),
        (0, 7, 0),
        (6, 3, 2),
        (1_200_000 * 1800, 120_000, 18_000),
        # Exact where a float is not: 0.145 * 100 = 14.499999... as a float.
        (145, 10, 15),
        (10**30 + 5, 10, 10**29 + 1),
    ],
    ids=[
        "half-up",
        "negative-half-away-from-zero",
        "3.5",
        "1.5",
        "0.5",
        "-0.5",
        "1.33-down",
        "1.67-up",
        "-1.33",
        "-1.67",
        "zero",
        "exact",
        "golden-interest",
        "14.5-not-float",
        "huge-exact",
    ],
)
def test_round_half_up(numerator: int, denominator: int, expected: int) -> None:
    assert round_half_up(numerator, denominator) == expected


@pytest.mark.parametrize("denominator", [0, -3], ids=["zero", "negative"])
def test_round_half_up_refuses_bad_denominator(denominator: int) -> None:
    with pytest.raises(ValueError, match="denominator"):
        round_half_up(1, denominator)


@pytest.mark.parametrize(
    ("text", "currency", "expected"),
    [
        ("1234.56", "CNY", 123456),
        ("1,234.56", "CNY", 123456),
        ("  12.5 ", "CNY", 1250),
        ("0.1", "CNY", 10),
        ("0.2", "CNY", 20),
        ("0.01", "USD", 1),
        (".5", "CNY", 50),
        ("7", "CNY", 700),
        ("1234", "JPY", 1234),
        ("1_000", "KRW", 1000),
        ("50000.00", "CNY", 5_000_000),
    ],
    ids=[
        "plain",
        "thousands",
        "spaces",
        "0.1",
        "0.2",
        "one-cent",
        "leading-dot",
        "integer",
        "jpy-0-decimals",
        "krw-underscore",
        "field-visit-threshold",
    ],
)
def test_parse_amount(text: str, currency: str, expected: int) -> None:
    assert parse_amount(text, currency) == expected


def test_parse_amount_is_exact_where_floats_are_not() -> None:
    assert 0.1 + 0.2 != 0.3  # the reason money is never a float
    assert parse_amount("0.1") + parse_amount("0.2") == parse_amount("0.3") == 30


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("1.234", "CNY", "more than 2 decimals"),
        ("12.5", "JPY", "more than 0 decimals"),
        ("abc", "CNY", "not an amount"),
        ("", "CNY", "not an amount"),
        ("-5", "CNY", "not an amount"),
        ("+5", "CNY", "not an amount"),
        ("1e5", "CNY", "not an amount"),
        ("1.2.3", "CNY", "not an amount"),
        ("NaN", "CNY", "not an amount"),
        (".", "CNY", "not an amount"),
        ("¥12", "CNY", "not an amount"),
    ],
    ids=[
        "too-many-decimals",
        "jpy-decimals",
        "junk",
        "empty",
        "negative",
        "plus-sign",
        "exponent",
        "two-dots",
        "nan",
        "lone-dot",
        "symbol",
    ],
)
def test_parse_amount_refuses(text: str, currency: str, message: str) -> None:
    with pytest.raises(MoneyError, match=message) as err:
        parse_amount(text, currency, field="payment.amount")
    assert str(err.value).startswith("payment.amount: ")


@pytest.mark.parametrize(
    "call",
    [
        lambda: parse_amount("1.00", "XXX"),
        lambda: format_amount(100, "XXX"),
    ],
    ids=["parse", "format"],
)
def test_unknown_currency_names_the_field(call: Callable[[], object]) -> None:
    with pytest.raises(MoneyError, match=r"^currency: unknown currency 'XXX'"):
        call()


@pytest.mark.parametrize(
    ("minor", "currency", "symbol", "expected"),
    [
        (123456, "CNY", False, "1,234.56"),
        (123456, "CNY", True, "¥1,234.56"),
        (5, "CNY", False, "0.05"),
        (0, "USD", True, "$0.00"),
        (-123456, "USD", True, "-$1,234.56"),
        (1234567, "JPY", True, "¥1,234,567"),
        (1234567, "KRW", True, "KRW 1,234,567"),
        (-100, "HKD", True, "-HKD 1.00"),
        (5_000_000, "CNY", False, "50,000.00"),
    ],
    ids=["plain", "symbol", "cents", "zero", "negative", "jpy", "no-symbol", "negative-no-symbol", "50k"],
)
def test_format_amount(minor: int, currency: str, symbol: bool, expected: str) -> None:
    assert format_amount(minor, currency, symbol=symbol) == expected


@pytest.mark.parametrize(
    ("minor", "currency", "language", "expected"),
    [
        (110_016, "CNY", "zh-CN", "¥1,100.16"),
        (110_016, "CNY", "en", "CNY 1,100.16"),
        (5, "CNY", "en", "CNY 0.05"),
        (123_456_789, "USD", "en", "USD 1,234,567.89"),
        (123_456_789, "USD", "zh-CN", "US$1,234,567.89"),
        (1000, "JPY", "en", "JPY 1,000"),
        (1000, "JPY", "zh-CN", "JP¥1,000"),
        (-250, "CNY", "zh-CN", "-¥2.50"),
        (1000, "KRW", "zh-CN", "KRW 1,000"),
    ],
)
def test_format_amount_in_a_message_language(minor: int, currency: str, language: str, expected: str) -> None:
    """Contact texts (activities/templates.py) write amounts the way the language does."""
    assert format_amount(minor, currency, language=language) == expected


@pytest.mark.parametrize("minor", [0, 1, 99, 100, 123456, 10**12 + 7], ids=str)
def test_format_then_parse_round_trips(minor: int) -> None:
    assert parse_amount(format_amount(minor)) == minor


@pytest.mark.parametrize(
    ("amount", "message"),
    [(0, "greater than zero"), (-1, "greater than zero"), (True, "integer"), (1.5, "integer")],
    ids=["zero", "negative", "bool", "float"],
)
def test_require_positive(amount: object, message: str) -> None:
    with pytest.raises(MoneyError, match=f"^amount: .*{message}"):
        require_positive(amount)  # type: ignore[arg-type]
    assert require_positive(5) == 5
