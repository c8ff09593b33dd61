"""From a validated start input to a new case."""

from __future__ import annotations

from datetime import date, datetime

from domain.calendar import CalendarError, local_date, zone
from domain.case import Case, unpaid_installments
from domain.enums import Product, RepaymentMethod
from domain.policy import Policy
from domain.schedule import build_schedule, validate_loan_terms


def _known_zone(name: str) -> bool:
    # An unknown zone is refused by validate_loan_terms, naming `timezone`.
    try:
        zone(name)
    except CalendarError:
        return False
    return True


def open_case(
    *,
    loan_id: str,
    borrower_id: str,
    product: Product,
    currency: str,
    principal: int,
    annual_rate_bps: int,
    term_months: int,
    repayment_method: RepaymentMethod,
    disbursed_on: date,
    first_due_date: date | None,
    timezone: str,
    policy: Policy,
    now: datetime,
) -> Case:
    """A new case with its schedule. Raises TermsError naming the first bad field."""
    first_due = validate_loan_terms(
        principal=principal,
        annual_rate_bps=annual_rate_bps,
        term_months=term_months,
        disbursed_on=disbursed_on,
        first_due_date=first_due_date,
        timezone=timezone,
        currency=currency,
        max_annual_rate_bps=policy.max_annual_rate_bps,
        max_term_months=policy.max_term_months,
        max_principal=policy.max_principal,
        today=local_date(now, timezone) if _known_zone(timezone) else None,
    )
    # A defaulted first due date (one month after disbursal) keeps the disbursal day of
    # month for the later due dates: disbursed Jan 31 -> Feb 29 -> Mar 31.
    rows = build_schedule(
        principal,
        annual_rate_bps,
        term_months,
        repayment_method,
        disbursed_on,
        first_due,
        day_of_month=disbursed_on.day if first_due_date is None else None,
    )
    return Case(
        loan_id=loan_id,
        borrower_id=borrower_id,
        product=product,
        currency=currency,
        principal=principal,
        annual_rate_bps=annual_rate_bps,
        term_months=term_months,
        repayment_method=repayment_method,
        disbursed_on=disbursed_on,
        first_due_date=first_due,
        timezone=timezone,
        policy=policy,
        onboarded_at=now,
        installments=unpaid_installments(rows),
    )
