"""Money: one rounding rule, exact parsing and formatting of minor units."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.money import (
    CURRENCY_EXPONENT,
    MoneyError,
    format_amount,
    parse_amount,
    require_positive,
    round_half_up,
)


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
    ("text", "currency", "expected"),
    [
        ("1,234.56", "CNY", 123456),
        ("12,345,678", "CNY", 1_234_567_800),
        ("1234.56", "CNY", 123456),
        ("999,999.99", "CNY", 99_999_999),
        ("1,000", "JPY", 1000),
        ("1,000.", "CNY", 100000),
        ("100,000,000", "KRW", 100_000_000),
    ],
)
def test_thousands_grouped_as_thousands_are_accepted(text: str, currency: str, expected: int) -> None:
    assert parse_amount(text, currency) == expected


@pytest.mark.parametrize(
    "text",
    [
        "12,50",  # a European decimal comma: would be booked 100 times too large
        "1,2,3",
        "1,23",
        ",5",
        "1,,000",
        "1 234,56",
        "1.234,56",
        "1,000,00",
        "1234,567",
        "0,123",
        "1,000.5,0",
        "12,345.6,7",
        ",",
        "1,",
        "1,000_000",
    ],
)
def test_a_comma_that_is_not_a_thousands_separator_is_refused(text: str) -> None:
    with pytest.raises(MoneyError) as err:
        parse_amount(text, "CNY", field="amount")
    message = str(err.value)
    assert message.startswith("amount: ") and "1234.50" in message, message
    assert "ambiguous" in message


@given(
    minor=st.integers(min_value=0, max_value=10**15),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENT)),
)
def test_every_formatted_amount_parses_back(minor: int, currency: str) -> None:
    """What the system writes (format_amount) it reads back exactly, in every currency."""
    assert parse_amount(format_amount(minor, currency), currency) == minor


@given(digits=st.from_regex(r"[1-9][0-9]{0,9}", fullmatch=True), data=st.data())
def test_a_single_comma_is_accepted_only_where_it_groups_thousands(digits: str, data: st.DataObject) -> None:
    """One comma put anywhere in a whole number: accepted only where it is the one
    thousands separator the number needs (and then it means what the digits mean)."""
    at = data.draw(st.integers(min_value=0, max_value=len(digits)))
    text = digits[:at] + "," + digits[at:]
    groups_thousands = len(digits) - at == 3 and 1 <= at <= 3
    if groups_thousands:
        assert parse_amount(text, "JPY") == int(digits)
    else:
        with pytest.raises(MoneyError, match="ambiguous"):
            parse_amount(text, "JPY")


_GROUPED = re.compile(r"[1-9][0-9]{0,2}(,[0-9]{3})+")


@given(text=st.text(alphabet="0123456789,.", min_size=1, max_size=14))
def test_a_comma_is_only_ever_read_as_a_thousands_separator(text: str) -> None:
    """Any mix of digits, commas and dots: if it is accepted with a comma, the commas
    group the whole part in thousands, and the value is that of the digits without them."""
    try:
        value = parse_amount(text, "CNY")
    except MoneyError:
        return
    if "," in text:
        whole = text.split(".", 1)[0]
        assert _GROUPED.fullmatch(whole), text
        assert value == parse_amount(text.replace(",", ""), "CNY")


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
