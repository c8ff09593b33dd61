"""Schedules: golden figures, due dates, and validation of loan terms."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from domain.enums import RepaymentMethod
from domain.schedule import TermsError, build_schedule, level_payment, validate_loan_terms
from tests.test_domain_helpers import make_case

EI = RepaymentMethod.EQUAL_INSTALLMENT
EP = RepaymentMethod.EQUAL_PRINCIPAL


def test_design_golden_equal_installment() -> None:
    """DESIGN.md: 1,200,000 at 1800 bps over 12 months, equal installment:
    installment 1 = 92,016 principal + 18,000 interest = 110,016."""
    rows = build_schedule(1_200_000, 1800, 12, EI, date(2024, 1, 15), date(2024, 2, 15))
    assert (rows[0].principal, rows[0].interest, rows[0].amount) == (92_016, 18_000, 110_016)
    # Installment 2: interest on 1,107,984 at 1.5 % = 16,619.76 -> 16,620; principal 110,016 - 16,620.
    assert (rows[1].principal, rows[1].interest) == (93_396, 16_620)
    assert all(r.amount == 110_016 for r in rows[:-1])
    assert sum(r.principal for r in rows) == 1_200_000
    # The last installment absorbs rounding: the balance left is 108,393, its interest
    # 108,393 * 0.015 = 1,625.895 -> 1,626.
    assert (rows[-1].principal, rows[-1].interest) == (108_393, 1_626)
    assert [r.seq for r in rows] == list(range(1, 13))


def test_equal_principal_golden() -> None:
    """1,200,000 at 1800 bps over 12 months, equal principal: principal 1,200,000 / 12 =
    100,000 each; interest of month k = (1,200,000 - 100,000 (k - 1)) x 1800 / 120,000
    = 18,000, 16,500, ..., 1,500 (it falls by 1,500 a month); total 1,500 x 78 = 117,000."""
    rows = build_schedule(1_200_000, 1800, 12, EP, date(2024, 1, 15), date(2024, 2, 15))
    assert [r.principal for r in rows] == [100_000] * 12
    assert [r.interest for r in rows] == [18_000 - 1_500 * k for k in range(12)]
    assert sum(r.interest for r in rows) == 117_000


def test_equal_principal_rounding_golden() -> None:
    """1,000,000 at 1000 bps over 3 months: monthly rate 1000 / 120,000 = 1/120.
    Principal 1,000,000 / 3 = 333,333.33 -> 333,333, 333,333 and the last 333,334.
    Interest 1,000,000/120 = 8,333.33 -> 8,333; 666,667/120 = 5,555.56 -> 5,556;
    333,334/120 = 2,777.78 -> 2,778."""
    rows = build_schedule(1_000_000, 1000, 3, EP, date(2024, 1, 15), date(2024, 2, 15))
    assert [(r.principal, r.interest) for r in rows] == [
        (333_333, 8_333),
        (333_333, 5_556),
        (333_334, 2_778),
    ]


@pytest.mark.parametrize("method", [EI, EP], ids=["equal-installment", "equal-principal"])
def test_zero_rate(method: RepaymentMethod) -> None:
    """1,000 over 3 months at 0 %: 333.33 -> 333, 333, and the last absorbs 334."""
    rows = build_schedule(1_000, 0, 3, method, date(2024, 1, 15), date(2024, 2, 15))
    assert [(r.principal, r.interest) for r in rows] == [(333, 0), (333, 0), (334, 0)]
    assert level_payment(1_000, 0, 3) == 333


@pytest.mark.parametrize(
    ("principal", "rate", "term", "method"),
    [
        (1_200_000, 1800, 12, EI),
        (1_200_000, 1800, 12, EP),
        (99_999_999, 3600, 120, EI),
        (99_999_999, 3600, 120, EP),
        (1, 3600, 1, EI),
        (7, 1, 12, EP),
        (50_000, 2399, 7, EI),
    ],
    ids=["golden-ei", "golden-ep", "big-ei", "big-ep", "one-fen", "tiny-ep", "odd"],
)
def test_principal_sums_exactly_and_never_negative(
    principal: int, rate: int, term: int, method: RepaymentMethod
) -> None:
    rows = build_schedule(principal, rate, term, method, date(2024, 1, 15), date(2024, 2, 15))
    assert len(rows) == term
    assert sum(r.principal for r in rows) == principal
    assert all(r.principal >= 0 and r.interest >= 0 for r in rows)
    # The first period's interest is a full month: monthly rate = bps / 12 from period one.
    assert rows[0].interest == (principal * rate * 2 + 120_000) // 240_000


@pytest.mark.parametrize(
    ("first_due", "expected"),
    [
        (
            date(2024, 1, 31),
            [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30), date(2024, 5, 31)],
        ),
        (
            date(2023, 1, 31),
            [date(2023, 1, 31), date(2023, 2, 28), date(2023, 3, 31), date(2023, 4, 30), date(2023, 5, 31)],
        ),
        (
            date(2024, 11, 30),
            [date(2024, 11, 30), date(2024, 12, 30), date(2025, 1, 30), date(2025, 2, 28), date(2025, 3, 30)],
        ),
        (
            date(2024, 2, 29),
            [date(2024, 2, 29), date(2024, 3, 29), date(2024, 4, 29), date(2024, 5, 29), date(2024, 6, 29)],
        ),
    ],
    ids=["jan31-leap", "jan31-common", "across-year-end", "feb29"],
)
def test_due_dates_keep_the_day_of_month(first_due: date, expected: list[date]) -> None:
    rows = build_schedule(500_000, 1200, 5, EI, date(2023, 12, 31), first_due)
    assert [r.due_date for r in rows] == expected
    # Each period starts on the previous due date; the first on the disbursal day.
    assert [r.period_start for r in rows] == [date(2023, 12, 31), *expected[:-1]]


def test_default_first_due_date_is_one_month_later() -> None:
    case = make_case(disbursed=date(2024, 1, 31), first_due=None)
    assert case.first_due_date == date(2024, 2, 29)
    assert case.installments[1].due_date == date(2024, 3, 31)


GOOD: dict[str, Any] = {
    "principal": 1_200_000,
    "annual_rate_bps": 1800,
    "term_months": 12,
    "disbursed_on": date(2024, 1, 15),
    "first_due_date": date(2024, 2, 15),
    "timezone": "Asia/Shanghai",
    "currency": "CNY",
    "max_annual_rate_bps": 3600,
    "max_term_months": 120,
}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"principal": 0}, "principal", "> 0"),
        ({"principal": -100}, "principal", "> 0"),
        ({"principal": 10.5}, "principal", "integer"),
        ({"principal": True}, "principal", "integer"),
        ({"term_months": 0}, "term_months", "1 to 120"),
        ({"term_months": 121}, "term_months", "1 to 120"),
        ({"term_months": "12"}, "term_months", "integer"),
        ({"annual_rate_bps": 3601}, "annual_rate_bps", "0 to 3600"),
        ({"annual_rate_bps": -1}, "annual_rate_bps", "0 to 3600"),
        ({"annual_rate_bps": 18.0}, "annual_rate_bps", "integer"),
        ({"annual_rate_bps": 2000, "max_annual_rate_bps": 1999}, "annual_rate_bps", "0 to 1999"),
        ({"first_due_date": date(2024, 1, 15)}, "first_due_date", "after disbursed_on"),
        ({"first_due_date": date(2024, 1, 14)}, "first_due_date", "after disbursed_on"),
        ({"first_due_date": date(2025, 1, 16)}, "first_due_date", "within a year"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "unknown IANA time zone"),
        ({"timezone": "../etc/passwd"}, "timezone", "unknown IANA time zone"),
        ({"currency": "XYZ"}, "currency", "unknown currency"),
    ],
    ids=[
        "principal-zero",
        "principal-negative",
        "principal-float",
        "principal-bool",
        "term-0",
        "term-121",
        "term-text",
        "rate-above-policy-max",
        "rate-negative",
        "rate-float",
        "rate-above-custom-max",
        "first-due-on-disbursal",
        "first-due-before-disbursal",
        "first-due-too-far",
        "unknown-timezone",
        "timezone-path",
        "unknown-currency",
    ],
)
def test_validation_errors_name_the_field(change: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(TermsError, match=message) as err:
        validate_loan_terms(**(GOOD | change))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, date(2024, 2, 15)),
        ({"first_due_date": None}, date(2024, 2, 15)),
        ({"term_months": 1}, date(2024, 2, 15)),
        ({"term_months": 120}, date(2024, 2, 15)),
        ({"annual_rate_bps": 3600}, date(2024, 2, 15)),
        ({"annual_rate_bps": 0}, date(2024, 2, 15)),
        ({"first_due_date": date(2024, 1, 16)}, date(2024, 1, 16)),
        ({"first_due_date": date(2025, 1, 15)}, date(2025, 1, 15)),
        ({"currency": "JPY", "timezone": "America/New_York"}, date(2024, 2, 15)),
    ],
    ids=[
        "good",
        "default-due",
        "term-1",
        "term-120",
        "rate-at-max",
        "rate-0",
        "next-day",
        "a-year",
        "jpy-ny",
    ],
)
def test_valid_terms_at_the_limits(change: dict[str, Any], expected: date) -> None:
    assert validate_loan_terms(**(GOOD | change)) == expected


def test_open_case_refuses_bad_terms() -> None:
    with pytest.raises(TermsError) as err:
        make_case(term=0)
    assert err.value.field == "term_months"


def test_open_case_refuses_an_unknown_time_zone_naming_it() -> None:
    with pytest.raises(TermsError) as err:
        make_case(tz="Mars/Olympus_Mons", onboarded=datetime(2024, 1, 15, 2, tzinfo=UTC))
    assert err.value.field == "timezone"
