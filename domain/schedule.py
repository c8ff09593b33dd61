"""Repayment schedules: equal installment (等额本息) and equal principal (等额本金).

Conventions (DESIGN.md): monthly rate = annual_rate_bps / 12 for every period, the first
included; each installment's interest is rounded half-up to the minor unit; the last
installment absorbs rounding so principal sums exactly to the loan.
"""

from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction

from pydantic import BaseModel

from domain.calendar import CalendarError, add_months, zone
from domain.enums import RepaymentMethod
from domain.money import MoneyError, check_currency, round_half_up

BPS = 10_000
MONTHS = 12
# A loan is disbursed at most this far ahead of the day it is onboarded (a disbursal
# dated years ahead is a typo, and would sleep until then without a word).
MAX_DISBURSAL_LEAD_DAYS = 366


class TermsError(ValueError):
    """Invalid loan terms. `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ScheduledInstallment(BaseModel):
    seq: int
    period_start: date
    due_date: date
    principal: int
    interest: int

    @property
    def amount(self) -> int:
        return self.principal + self.interest


def monthly_interest(balance: int, annual_rate_bps: int) -> int:
    """One month's interest on a balance: balance * bps / (12 * 10_000), half-up."""
    return round_half_up(balance * annual_rate_bps, MONTHS * BPS)


def level_payment(principal: int, annual_rate_bps: int, term_months: int) -> int:
    """The equal installment P * r * (1+r)^n / ((1+r)^n - 1), computed exactly, rounded once."""
    if annual_rate_bps == 0:
        return round_half_up(principal, term_months)
    rate = Fraction(annual_rate_bps, MONTHS * BPS)
    growth = (1 + rate) ** term_months
    exact = principal * rate * growth / (growth - 1)
    return round_half_up(exact.numerator, exact.denominator)


def due_dates(first_due_date: date, count: int, day_of_month: int | None = None) -> list[date]:
    """Monthly due dates keeping the first due date's day of month (or `day_of_month`, when
    the first due date was itself derived from another date) where it exists."""
    return [first_due_date] + [add_months(first_due_date, k, day_of_month) for k in range(1, count)]


def amortize(
    principal: int, annual_rate_bps: int, periods: int, method: RepaymentMethod
) -> list[tuple[int, int]]:
    """(principal, interest) of each of `periods` monthly installments repaying
    `principal`: each period's interest is a month's interest on the balance at its start;
    the last installment takes whatever principal is left."""
    payment = level_payment(principal, annual_rate_bps, periods)
    even_principal = round_half_up(principal, periods)
    balance = principal
    rows = []
    for k in range(periods):
        interest = monthly_interest(balance, annual_rate_bps)
        if k == periods - 1:
            part = balance
        elif method is RepaymentMethod.EQUAL_INSTALLMENT:
            part = min(balance, max(payment - interest, 0))
        else:
            part = min(balance, even_principal)
        rows.append((part, interest))
        balance -= part
    return rows


def build_schedule(
    principal: int,
    annual_rate_bps: int,
    term_months: int,
    method: RepaymentMethod,
    start: date,
    first_due_date: date,
    first_seq: int = 1,
    day_of_month: int | None = None,
) -> list[ScheduledInstallment]:
    """The installments of an amortizing loan whose first period runs start..first_due_date.
    `day_of_month`: the day later due dates keep (default the first due date's day)."""
    dates = due_dates(first_due_date, term_months, day_of_month)
    starts = [start, *dates[:-1]]
    return [
        ScheduledInstallment(
            seq=first_seq + k, period_start=begin, due_date=due, principal=part, interest=interest
        )
        for k, (begin, due, (part, interest)) in enumerate(
            zip(starts, dates, amortize(principal, annual_rate_bps, term_months, method), strict=True)
        )
    ]


def default_first_due_date(disbursed_on: date) -> date:
    """One month after disbursal. The schedule then keeps the disbursal day of month:
    disbursed Jan 31 -> Feb 29 -> Mar 31, not Mar 29."""
    return add_months(disbursed_on, 1)


def validate_loan_terms(
    *,
    principal: int,
    annual_rate_bps: int,
    term_months: int,
    disbursed_on: date,
    first_due_date: date | None,
    timezone: str,
    currency: str,
    max_annual_rate_bps: int,
    max_term_months: int,
    max_principal: int | None = None,
    today: date | None = None,
) -> date:
    """Checks the terms of a loan; returns the effective first due date.
    `max_principal`: the policy's bound (minor units); `today`: the local day the loan is
    onboarded (disbursed_on may be at most MAX_DISBURSAL_LEAD_DAYS after it).
    Raises TermsError naming the first bad field."""
    if isinstance(principal, bool) or not isinstance(principal, int) or principal <= 0:
        raise TermsError("principal", f"must be an integer > 0 in minor units (got {principal!r})")
    if max_principal is not None and principal > max_principal:
        raise TermsError(
            "principal",
            f"must be at most {max_principal} minor units under the policy (max_principal "
            f"{max_principal}; got {principal})",
        )
    if isinstance(term_months, bool) or not isinstance(term_months, int):
        raise TermsError("term_months", f"must be an integer (got {term_months!r})")
    if not 1 <= term_months <= max_term_months:
        raise TermsError(
            "term_months",
            f"must be 1 to {max_term_months} months under the policy (max_term_months "
            f"{max_term_months}; got {term_months})",
        )
    if isinstance(annual_rate_bps, bool) or not isinstance(annual_rate_bps, int):
        raise TermsError("annual_rate_bps", f"must be an integer (got {annual_rate_bps!r})")
    if not 0 <= annual_rate_bps <= max_annual_rate_bps:
        raise TermsError(
            "annual_rate_bps",
            f"must be 0 to {max_annual_rate_bps} bps under the policy (got {annual_rate_bps})",
        )
    try:
        check_currency(currency)
    except MoneyError as exc:
        raise TermsError("currency", str(exc).split(": ", 1)[1]) from exc
    try:
        zone(timezone)
    except CalendarError as exc:
        raise TermsError("timezone", str(exc).split(": ", 1)[1]) from exc
    if today is not None and disbursed_on > today + timedelta(days=MAX_DISBURSAL_LEAD_DAYS):
        raise TermsError(
            "disbursed_on",
            f"{disbursed_on.isoformat()} is more than {MAX_DISBURSAL_LEAD_DAYS} days after today "
            f"({today.isoformat()})",
        )
    effective = first_due_date or default_first_due_date(disbursed_on)
    if effective <= disbursed_on:
        raise TermsError(
            "first_due_date",
            f"must be after disbursed_on {disbursed_on.isoformat()} (got {effective.isoformat()})",
        )
    if effective > add_months(disbursed_on, 12):
        raise TermsError("first_due_date", "must be within a year of disbursed_on")
    return effective
