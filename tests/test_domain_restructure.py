"""Approved restructurings: extension, re-installment, waiver, and their refusals."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from domain.case import Case, Components
from domain.enums import CollectionStage, InstallmentStatus, RestructuringKind
from domain.ledger import (
    CaseError,
    apply_payment,
    days_past_due,
    outstanding,
    overdue_amount,
    stage,
    status_of,
    today_for,
)
from domain.restructure import restructure
from tests.test_domain_helpers import FIRST_DUE, local, make_case

EXT = RestructuringKind.EXTENSION
REI = RestructuringKind.REINSTALLMENT
WAI = RestructuringKind.WAIVER


def at_dpd(n: int, hh: int = 12) -> datetime:
    return local(FIRST_DUE + timedelta(days=n), hh)


def approved(case: Case, kind: RestructuringKind, now: datetime, rid: str = "R-1", **kw: Any) -> Case:
    return restructure(
        case, restructuring_id=rid, kind=kind, approved_by="risk.lead", approval_ref="APP-9", now=now, **kw
    )


# --- Extension ------------------------------------------------------------------------


def test_extension_cures_and_shifts_every_unpaid_due_date() -> None:
    case = make_case()
    now = at_dpd(10)
    after = approved(case, EXT, now, extension_days=20)
    today = today_for(after, now)
    assert days_past_due(after, today) == 0
    assert stage(after, today) is CollectionStage.CURRENT
    assert overdue_amount(after, today) == 0
    assert [i.due_date for i in after.installments] == [
        i.due_date + timedelta(days=20) for i in case.installments
    ]
    assert after.restructurings[-1].detail == "extension by 20 days"
    assert after.restructurings[-1].approved_by == "risk.lead"


def test_extension_keeps_a_charged_penalty_and_the_payoff_still_closes() -> None:
    """At DPD 10 the penalty (690) is charged; an extension does not erase it. Paying the
    payoff amount must allocate it too (it used to fail an internal assertion)."""
    case = make_case()
    now = at_dpd(10)
    after = approved(case, EXT, now, extension_days=20)
    today = today_for(after, now)
    payoff = outstanding(after, today)
    assert payoff.penalty == 690
    closed, alloc = apply_payment(after, payoff.total, now)
    assert alloc == payoff
    assert closed.closed


def test_extension_in_grace_charges_no_penalty_when_paid_by_the_new_date() -> None:
    case = make_case()
    after = approved(case, EXT, at_dpd(2), extension_days=10)
    new_due = FIRST_DUE + timedelta(days=10)
    paid, alloc = apply_payment(after, 110_016, local(new_due, 18))
    assert alloc == Components(interest=18_000, principal=92_016)
    assert outstanding(paid, new_due + timedelta(days=5)).penalty == 0


def test_extension_of_exactly_the_days_past_due_makes_it_due_today() -> None:
    case = make_case()
    now = at_dpd(10)
    after = approved(case, EXT, now, extension_days=10)
    today = today_for(after, now)
    assert status_of(after, after.installments[0], today) is InstallmentStatus.DUE
    assert days_past_due(after, today) == 0


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (9, "leaves installment 1 overdue; at least 10 are needed"),
        (0, "must be 1 to 180"),
        (181, "must be 1 to 180"),
        (None, "must be 1 to 180"),
        (True, "must be 1 to 180"),
    ],
    ids=["too-few", "zero", "above-policy-max", "missing", "bool"],
)
def test_extension_refusals_name_extension_days(days: Any, message: str) -> None:
    with pytest.raises(CaseError, match=message) as err:
        approved(make_case(), EXT, at_dpd(10), extension_days=days)
    assert err.value.field == "extension_days"


# --- Re-installment -------------------------------------------------------------------


def test_reinstallment_capitalizes_everything_outstanding() -> None:
    """At DPD 35 (2024-03-21) the payoff is 1,252,674: penalty 2,415 + 420, interest
    18,000 + 16,620 + 15,219 (period 3 has begun and runs to 2024-04-15), principal
    1,200,000. It is re-amortized over 6 months from the end of period 3: due 2024-05-15
    to 2024-10-15."""
    case = make_case()
    now = at_dpd(35)
    today = today_for(case, now)
    capital = outstanding(case, today)
    assert capital == Components(penalty=2_835, interest=49_839, principal=1_200_000)
    after = approved(case, REI, now, new_term_months=6)
    fresh = [i for i in after.installments if i.seq > 12]
    assert [i.seq for i in after.installments] == list(range(13, 19))  # all old ones unpaid: replaced
    assert sum(i.principal for i in fresh) == 1_252_674
    assert [i.due_date for i in fresh] == [date(2024, m, 15) for m in range(5, 11)]
    # Interest of the new first month on the capitalized amount: 1,252,674 x 0.015 = 18,790.11.
    assert fresh[0].interest == 18_790
    assert days_past_due(after, today) == 0
    # Period 3's interest is in the capital: the new first period begins when it ends,
    # so the same-day payoff is the capital, and no day's interest is charged twice.
    assert outstanding(after, today) == Components(principal=1_252_674)
    assert outstanding(after, date(2024, 4, 15)) == Components(interest=18_790, principal=1_252_674)
    assert after.restructurings[-1].detail == "re-installment over 6 months"


def test_reinstallment_keeps_what_was_paid_and_moves_the_rest() -> None:
    case = make_case()
    case, _ = apply_payment(case, 50_000, at_dpd(20))  # penalty 1,380, interest 18,000, principal 30,620
    now = at_dpd(35)
    today = today_for(case, now)
    capital = outstanding(case, today).total
    after = approved(case, REI, now, new_term_months=12)
    kept = after.installments[0]
    assert kept.seq == 1
    assert (kept.principal, kept.interest) == (kept.paid.principal, kept.paid.interest) == (30_620, 18_000)
    assert status_of(after, kept, today) is InstallmentStatus.PAID
    fresh = [i for i in after.installments if i.seq > 12]
    assert sum(i.principal for i in fresh) == capital
    # Payoff right after: the capital; the new first period has not begun.
    assert outstanding(after, today).total == capital


def test_reinstallment_on_the_31st_keeps_month_ends() -> None:
    # The running period ends on Jan 31: the new plan starts there.
    case = make_case(disbursed=date(2023, 12, 31), first_due=date(2024, 1, 31))
    after = approved(case, REI, local(date(2024, 1, 20), 12), new_term_months=3)
    assert [i.due_date for i in after.installments if i.seq > 12] == [
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 30),
    ]


@pytest.mark.parametrize("months", [0, 61, None, "6"], ids=["zero", "above-policy-max", "missing", "text"])
def test_reinstallment_refusals_name_new_term_months(months: Any) -> None:
    with pytest.raises(CaseError, match="must be 1 to 60") as err:
        approved(make_case(), REI, at_dpd(35), new_term_months=months)
    assert err.value.field == "new_term_months"


# --- Waiver ---------------------------------------------------------------------------


def test_waiver_of_penalty() -> None:
    case = make_case()
    now = at_dpd(35)
    today = today_for(case, now)
    after = approved(case, WAI, now, waive_penalty=True)
    assert outstanding(after, today).penalty == 0
    assert after.restructurings[-1].detail == "waiver of penalty"
    # Paying the contract amounts of 1 and 2 now cures the loan.
    cured, _ = apply_payment(after, 110_016 * 2, now)
    assert days_past_due(cured, today) == 0
    # Penalty accrues again only from the waiver on: 0 more days today.
    assert overdue_amount(cured, today) == 0


@pytest.mark.parametrize(
    ("amount", "penalty_left", "interest_left"),
    [
        (1_000, 2_835 - 1_000, 34_620),
        (2_415 + 500, 420, 34_620 - 500),  # installment 1: penalty, then its interest
        (2_415 + 18_000 + 420 + 16_620, 0, 0),  # all penalty and interest of 1 and 2
    ],
    ids=["part-of-penalty", "penalty-then-interest", "everything-waivable"],
)
def test_waiver_of_an_amount_oldest_first_never_principal(
    amount: int, penalty_left: int, interest_left: int
) -> None:
    case = make_case()
    now = at_dpd(35)
    today = today_for(case, now)
    after = approved(case, WAI, now, waive_amount=amount)
    assert outstanding(after, today).penalty == penalty_left
    assert overdue_amount(after, today) == penalty_left + interest_left + 92_016 + 93_396
    assert outstanding(after, today).principal == 1_200_000
    assert after.restructurings[-1].detail == f"waiver of amount {amount}"


def test_waiver_above_what_is_waivable_is_refused() -> None:
    case = make_case()
    waivable = 2_415 + 18_000 + 420 + 16_620
    with pytest.raises(CaseError, match=f"above the penalty, fees and interest owed \\({waivable}\\)") as err:
        approved(case, WAI, at_dpd(35), waive_amount=waivable + 1)
    assert err.value.field == "waive_amount"


def test_waiver_that_leaves_nothing_owed_closes_the_loan() -> None:
    case = make_case(term=1)
    only = case.installments[0]
    paid_principal = only.model_copy(update={"paid": Components(principal=only.principal)})
    case = case.model_copy(update={"installments": [paid_principal]})
    after = approved(case, WAI, local(date(2024, 2, 15), 12), waive_amount=only.interest)
    assert after.closed


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({}, "waive_penalty"),
        ({"waive_amount": 0}, "waive_amount"),
        ({"waive_amount": -10}, "waive_amount"),
        ({"waive_amount": True}, "waive_amount"),
    ],
    ids=["nothing-to-waive", "zero", "negative", "bool"],
)
def test_waiver_refusals(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(CaseError) as err:
        approved(make_case(), WAI, at_dpd(35), **kw)
    assert err.value.field == field


# --- Approval and state -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approved_by", "approval_ref", "field"),
    [
        (None, "APP-1", "approved_by"),
        ("", "APP-1", "approved_by"),
        ("   ", "APP-1", "approved_by"),
        ("risk.lead", None, "approval_ref"),
        ("risk.lead", " ", "approval_ref"),
    ],
    ids=["no-approver", "empty-approver", "blank-approver", "no-ref", "blank-ref"],
)
@pytest.mark.parametrize("kind", list(RestructuringKind), ids=lambda k: k.value)
def test_missing_approval_is_refused(
    approved_by: str | None, approval_ref: str | None, field: str, kind: RestructuringKind
) -> None:
    case = make_case()
    with pytest.raises(CaseError, match="approv") as err:
        restructure(
            case,
            restructuring_id="R-1",
            kind=kind,
            approved_by=approved_by,
            approval_ref=approval_ref,
            extension_days=20,
            new_term_months=6,
            waive_penalty=True,
            now=at_dpd(10),
        )
    assert err.value.field == field


@pytest.mark.parametrize(
    ("update", "message"),
    [({"closed": True}, "closed"), ({"charged_off": True}, "charged off")],
    ids=["closed", "charged-off"],
)
@pytest.mark.parametrize(
    ("kind", "kw"),
    [(EXT, {"extension_days": 20}), (REI, {"new_term_months": 6}), (WAI, {"waive_penalty": True})],
    ids=["extension", "reinstallment", "waiver"],
)
def test_restructuring_refused_on_a_closed_or_charged_off_loan(
    update: dict[str, bool], message: str, kind: RestructuringKind, kw: dict[str, Any]
) -> None:
    case = make_case().model_copy(update=update)
    with pytest.raises(CaseError, match=message) as err:
        approved(case, kind, at_dpd(10), **kw)
    assert err.value.field == "loan_id"


@pytest.mark.parametrize(
    ("kind", "kw", "message"),
    [
        (EXT, {"extension_days": 5}, "nothing is left to extend"),
        (REI, {"new_term_months": 6}, "nothing is outstanding"),
    ],
    ids=["extension", "reinstallment"],
)
def test_nothing_left_to_restructure(kind: RestructuringKind, kw: dict[str, Any], message: str) -> None:
    case = make_case(term=1)
    only = case.installments[0]
    settled = only.model_copy(update={"paid": Components(principal=only.principal, interest=only.interest)})
    case = case.model_copy(update={"installments": [settled]})  # settled but not yet closed
    with pytest.raises(CaseError, match=message) as err:
        approved(case, kind, local(date(2024, 2, 1), 12), **kw)
    assert err.value.field == "kind"


def test_a_prepayment_keeps_an_approved_interest_waiver() -> None:
    """Interest waived on installment 2, then an extension makes it a later installment:
    a prepayment re-amortizes it, and the waiver still stands."""
    from domain.ledger import apply_payment, remaining_interest

    case = make_case()
    now = at_dpd(33)  # installment 2 is due (Mar 15) and its interest owed
    waived = approved(case, WAI, now, waive_penalty=True, waive_amount=18_000 + 16_620)
    assert remaining_interest(waived.installments[1]) == 0
    extended = approved(waived, EXT, now, rid="R-2", extension_days=40)
    paid, _ = apply_payment(extended, 300_000, now)
    assert remaining_interest(paid.installments[1]) == 0
