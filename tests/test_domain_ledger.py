"""Ledger: penalty accrual, payoff amount, allocation, refusals, days past due, stage.

Figures for the standard loan (tests/test_domain_helpers.py): installment 1 is 92,016
principal + 18,000 interest due 2024-02-15; installment 2 is 93,396 + 16,620 due
2024-03-15. Penalty per day on installment 1's principal:
92,016 x 1800 bps x 1.5 / 10,000 / 360 = 92,016 x 0.00075 = 69.012.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from domain.case import Case, Components
from domain.enums import CollectionStage, InstallmentStatus
from domain.ledger import (
    CaseError,
    apply_payment,
    days_past_due,
    oldest_overdue,
    outstanding,
    overdue_amount,
    owed_on,
    payment_date,
    remaining_interest,
    remaining_principal,
    stage,
    status_of,
    today_for,
)
from domain.schedule import monthly_interest
from tests.test_domain_helpers import FIRST_DUE, NY, POLICY, SH, local, make_case, utc

INST1 = 110_016


def dpd_day(n: int, due: date = FIRST_DUE) -> date:
    return due + timedelta(days=n)


def at_dpd(n: int, hh: int = 12) -> datetime:
    return local(dpd_day(n), hh)


# --- Penalty --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dpd", "penalty"),
    [
        (0, 0),
        (1, 0),
        (3, 0),  # grace: accrued (207) but not charged
        (4, 276),  # 69.012 x 4 = 276.048 -> 276, from the due date
        (10, 690),  # 69.012 x 10 = 690.12 -> 690
        (28, 1932),  # 69.012 x 28 = 1,932.336 -> 1,932 (DPD 28 = Mar 14, before installment 2 is due)
    ],
    ids=["due-day", "dpd-1", "dpd-3-grace", "dpd-4-charged", "dpd-10", "dpd-28"],
)
def test_penalty_accrues_from_the_due_date_once_grace_has_passed(dpd: int, penalty: int) -> None:
    case = make_case()
    today = dpd_day(dpd)
    assert outstanding(case, today).penalty == penalty
    assert overdue_amount(case, today) == (INST1 + penalty if dpd > 0 else 0)


def test_penalty_is_on_overdue_principal_only_and_follows_partial_payments() -> None:
    """Pay 68,706 at DPD 10 = penalty 690 + interest 18,000 + principal 50,016, leaving 42,000
    principal. Ten more days on 42,000: 42,000 x 0.00075 x 10 = 315 exactly."""
    case = make_case()
    case, alloc = apply_payment(case, 68_706, at_dpd(10))
    assert alloc == Components(penalty=690, interest=18_000, principal=50_016)
    assert outstanding(case, dpd_day(20)).penalty == 315
    assert overdue_amount(case, dpd_day(20)) == 42_315


def test_partial_payment_in_grace_then_late_charges_the_whole_penalty_from_the_due_date() -> None:
    """68,016 at DPD 2 (not charged yet) pays interest 18,000 + principal 50,016. Still unpaid
    after grace, so the penalty is charged from the due date: 2 days on 92,016 =
    138.024 -> 138, then 4 days on 42,000 = 126; 264 at DPD 6."""
    case = make_case()
    case, alloc = apply_payment(case, 68_016, at_dpd(2))
    assert alloc == Components(interest=18_000, principal=50_016)
    assert outstanding(case, dpd_day(3)).penalty == 0
    assert outstanding(case, dpd_day(6)).penalty == 264


@pytest.mark.parametrize("dpd", [1, 2, 3], ids=["dpd-1", "dpd-2", "dpd-3"])
def test_paid_in_grace_means_no_penalty(dpd: int) -> None:
    case = make_case()
    case, alloc = apply_payment(case, INST1, at_dpd(dpd))
    assert alloc == Components(interest=18_000, principal=92_016)
    later = dpd_day(10)
    assert outstanding(case, later).penalty == 0
    assert status_of(case, case.installments[0], later) is InstallmentStatus.PAID
    assert days_past_due(case, later) == 0


# --- Payoff amount --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Early settlement pays the running period's interest in full, from day one.
        (date(2024, 1, 15), Components(interest=18_000, principal=1_200_000)),
        (date(2024, 1, 16), Components(interest=18_000, principal=1_200_000)),
        (date(2024, 2, 14), Components(interest=18_000, principal=1_200_000)),
        # Due date: installment 1's interest is due and period 2, running from today, too.
        (date(2024, 2, 15), Components(interest=34_620, principal=1_200_000)),
        # DPD 1: period 2 has begun, its full interest 16,620 is included; no penalty in grace.
        (date(2024, 2, 16), Components(interest=34_620, principal=1_200_000)),
        # DPD 4: penalty 276 charged.
        (date(2024, 2, 19), Components(penalty=276, interest=34_620, principal=1_200_000)),
    ],
    ids=["disbursal-day", "day-after", "mid-period", "due-date", "dpd-1", "dpd-4"],
)
def test_payoff_amount_rule(day: date, expected: Components) -> None:
    assert outstanding(make_case(), day) == expected


def test_paying_an_installment_early_does_not_bring_the_next_periods_interest_forward() -> None:
    day_before = FIRST_DUE - timedelta(days=1)
    case, _ = apply_payment(make_case(), INST1, local(day_before, 9))
    balance = 1_200_000 - 92_016
    assert outstanding(case, day_before) == Components(principal=balance)
    # Period 2 begins on installment 1's due date: from then on its interest is owed.
    for day in (FIRST_DUE, FIRST_DUE + timedelta(days=10)):
        assert outstanding(case, day) == Components(interest=16_620, principal=balance)


def test_closing_on_one_day_costs_the_same_however_the_payments_are_split() -> None:
    day = local(date(2024, 2, 1), 10)
    whole = outstanding(make_case(), today_for(make_case(), day)).total
    case, _ = apply_payment(make_case(), INST1, day)
    rest = outstanding(case, today_for(case, day)).total
    assert (whole, INST1 + rest) == (1_218_000, 1_218_000)
    closed, _ = apply_payment(case, rest, day)
    assert closed.closed


@pytest.mark.parametrize(
    "when",
    [local(date(2024, 1, 15), 11), local(date(2024, 1, 20), 9), at_dpd(0), at_dpd(1), at_dpd(45)],
    ids=["disbursal-day", "mid-period", "due-date", "grace", "dpd-45"],
)
def test_paying_the_payoff_closes_the_loan(when: datetime) -> None:
    case = make_case()
    today = today_for(case, when)
    payoff = outstanding(case, today)
    closed, alloc = apply_payment(case, payoff.total, when)
    assert alloc == payoff
    assert closed.closed
    assert outstanding(closed, today).total == 0
    assert stage(closed, today) is CollectionStage.PAID_OFF
    assert all(status_of(closed, i, today) is InstallmentStatus.PAID for i in closed.installments)
    with pytest.raises(CaseError) as err:
        apply_payment(closed, 1, when)
    assert err.value.field == "loan_id"
    assert "closed" in str(err.value)


# --- Allocation -----------------------------------------------------------------------


def _with_fee(case: Case, fee: int) -> Case:
    first = case.installments[0].model_copy(update={"fee": fee})
    return case.model_copy(update={"installments": [first, *case.installments[1:]]})


# At DPD 35 (2024-03-21): installment 1 penalty 69.012 x 35 = 2,415.42 -> 2,415, fee 500;
# installment 2 (due Mar 15, DPD 6) penalty 93,396 x 0.00075 x 6 = 420.282 -> 420.
@pytest.mark.parametrize(
    ("amount", "first", "second"),
    [
        (1_000, Components(penalty=1_000), Components()),
        (2_715, Components(penalty=2_415, fee=300), Components()),
        (20_920, Components(penalty=2_415, fee=500, interest=18_000, principal=5), Components()),
        (
            112_931 + 100,
            Components(penalty=2_415, fee=500, interest=18_000, principal=92_016),
            Components(penalty=100),
        ),
        (
            112_931 + 420 + 16_620 + 7,
            Components(penalty=2_415, fee=500, interest=18_000, principal=92_016),
            Components(penalty=420, interest=16_620, principal=7),
        ),
    ],
    ids=["penalty-first", "then-fee", "then-interest-then-principal", "oldest-first", "next-installment"],
)
def test_allocation_oldest_first_penalty_fee_interest_principal(
    amount: int, first: Components, second: Components
) -> None:
    case = _with_fee(make_case(), 500)
    when = at_dpd(35)
    assert outstanding(case, today_for(case, when)).penalty == 2_415 + 420
    after, alloc = apply_payment(case, amount, when)
    assert alloc.total == amount
    assert after.installments[0].paid == first
    assert after.installments[1].paid == second
    assert alloc == first + second


def test_overpayment_prepays_principal_and_re_amortizes_the_rest() -> None:
    """310,016 on 2024-02-10 (mid period 1): installment 1 takes 18,000 + 92,016; the
    200,000 beyond prepays principal. The 907,984 still owed is re-amortized over the 11
    remaining due dates: installment 2 = 76,537 principal + 13,620 interest (1.5 % of
    907,984), where it was 93,396 + 16,620."""
    case = make_case()
    after, alloc = apply_payment(case, 310_016, local(date(2024, 2, 10), 15))
    assert alloc == Components(interest=18_000, principal=292_016)
    i1, i2 = after.installments[:2]
    assert i1.paid == Components(interest=18_000, principal=92_016)
    assert i2.paid == Components(principal=200_000)  # the prepayment, booked on the next one
    assert (remaining_principal(i2), remaining_interest(i2)) == (76_537, 13_620)
    assert [i.due_date for i in after.installments] == [i.due_date for i in case.installments]
    assert sum(i.principal for i in after.installments) == 1_200_000
    assert sum(remaining_principal(i) for i in after.installments) == 907_984
    # A prepayment is not an installment paid ahead: installment 2 is still due on its date.
    assert days_past_due(after, date(2024, 4, 20)) == (date(2024, 4, 20) - i2.due_date).days
    assert outstanding(after, date(2024, 2, 10)).principal == 1_200_000 - 292_016


def test_prepaying_principal_never_buys_interest_free_months() -> None:
    """A borrower who pays each installment early plus 50,000 of extra principal is
    charged, every period, a month's interest on what is still owed during that period:
    no more, and no period for free."""
    case = make_case()
    for k in range(8):
        inst = case.installments[k]
        day = inst.due_date - timedelta(days=1)
        owed = outstanding(case, day)
        assert inst.interest - inst.paid.interest == monthly_interest(owed.principal, 1800), k
        case, _ = apply_payment(case, owed_on(case, inst, day).total + 50_000, local(day, 10))
        assert days_past_due(case, day) == 0


@pytest.mark.parametrize(
    ("amount", "field", "message"),
    [
        (1_218_001, "amount", "above the payoff amount 1218000"),
        (0, "amount", "> 0"),
        (-5, "amount", "> 0"),
        (True, "amount", "integer"),
        (10.5, "amount", "integer"),
    ],
    ids=["above-payoff", "zero", "negative", "bool", "float"],
)
def test_payment_refusals(amount: object, field: str, message: str) -> None:
    case = make_case()
    with pytest.raises(CaseError, match=message) as err:
        apply_payment(case, amount, local(date(2024, 2, 1), 12))  # type: ignore[arg-type]
    assert err.value.field == field


# --- Days past due in the borrower's calendar ---------------------------------------------


@pytest.mark.parametrize(
    ("tz", "first_due", "instant", "dpd", "status"),
    [
        # Asia/Shanghai is UTC+8: 15:59Z is 23:59 on the due date, 16:30Z already the next day.
        (SH, FIRST_DUE, utc(2024, 2, 15, 15, 59), 0, InstallmentStatus.DUE),
        (SH, FIRST_DUE, utc(2024, 2, 15, 16, 30), 1, InstallmentStatus.OVERDUE),
        (SH, FIRST_DUE, utc(2024, 2, 14, 16, 0), 0, InstallmentStatus.DUE),
        (SH, FIRST_DUE, utc(2024, 2, 14, 15, 59), 0, InstallmentStatus.SCHEDULED),
        # New York, due on the spring-forward day (2024-03-10, EST -> EDT): local midnight
        # after it is 04:00Z (EDT), not 05:00Z.
        (NY, date(2024, 3, 10), utc(2024, 3, 10, 4, 30), 0, InstallmentStatus.SCHEDULED),
        (NY, date(2024, 3, 10), utc(2024, 3, 11, 3, 59), 0, InstallmentStatus.DUE),
        (NY, date(2024, 3, 10), utc(2024, 3, 11, 4, 0), 1, InstallmentStatus.OVERDUE),
        # Due on the fall-back day (2024-11-03, EDT -> EST): the next midnight is 05:00Z.
        (NY, date(2024, 11, 3), utc(2024, 11, 4, 4, 59), 0, InstallmentStatus.DUE),
        (NY, date(2024, 11, 3), utc(2024, 11, 4, 5, 0), 1, InstallmentStatus.OVERDUE),
        # DPD counted across the DST change: Mar 1 .. Mar 31 local is 30 days.
        (NY, date(2024, 3, 1), utc(2024, 3, 31, 12), 30, InstallmentStatus.OVERDUE),
        # Feb 29: due on the leap day; Mar 1 is DPD 1, Mar 30 is DPD 30.
        (SH, date(2024, 2, 29), utc(2024, 2, 29, 15, 0), 0, InstallmentStatus.DUE),
        (SH, date(2024, 2, 29), utc(2024, 2, 29, 16, 0), 1, InstallmentStatus.OVERDUE),
        (SH, date(2024, 2, 29), utc(2024, 3, 30, 4, 0), 30, InstallmentStatus.OVERDUE),
    ],
    ids=[
        "shanghai-23:59",
        "shanghai-utc-same-day-local-next-day",
        "shanghai-due-day-starts-16Z",
        "shanghai-day-before",
        "ny-dst-before-due",
        "ny-dst-23:59-EDT",
        "ny-dst-midnight-EDT",
        "ny-fallback-23:59-EST",
        "ny-fallback-midnight-EST",
        "ny-dpd-across-dst",
        "feb29-due",
        "feb29-dpd-1",
        "feb29-dpd-30",
    ],
)
def test_days_past_due_in_the_local_calendar(
    tz: str, first_due: date, instant: datetime, dpd: int, status: InstallmentStatus
) -> None:
    case = make_case(tz=tz, disbursed=first_due - timedelta(days=20), first_due=first_due)
    today = today_for(case, instant)
    assert days_past_due(case, today) == dpd
    assert status_of(case, case.installments[0], today) is status
    oldest = oldest_overdue(case, today)
    assert (oldest.seq if oldest else None) == (1 if dpd else None)


def test_dpd_counts_from_the_oldest_unpaid_installment() -> None:
    case = make_case()
    # DPD 35 of installment 1; installment 2 is 6 days late. Pay installment 1 (with its
    # penalty): DPD now counts from installment 2.
    when = at_dpd(35)
    today = today_for(case, when)
    assert days_past_due(case, today) == 35
    case, _ = apply_payment(case, 2_415 + INST1, when)
    assert days_past_due(case, today) == 6
    assert stage(case, today) is CollectionStage.EARLY


# --- Stage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dpd", "expected"),
    [
        (0, CollectionStage.CURRENT),
        (1, CollectionStage.GRACE),
        (3, CollectionStage.GRACE),
        (4, CollectionStage.EARLY),
        (30, CollectionStage.EARLY),
        (31, CollectionStage.AGENT),
        (90, CollectionStage.AGENT),
        (91, CollectionStage.LEGAL),
        (400, CollectionStage.LEGAL),
    ],
    ids=lambda v: str(v),
)
def test_stage_from_dpd(dpd: int, expected: CollectionStage) -> None:
    assert POLICY.stage_for_dpd(dpd) is expected
    case = make_case(term=36)
    assert stage(case, dpd_day(dpd)) is expected


def test_charged_off_and_paid_off_are_events() -> None:
    case = make_case()
    assert stage(case.model_copy(update={"charged_off": True}), dpd_day(200)) is CollectionStage.CHARGED_OFF
    assert stage(case.model_copy(update={"charged_off": True}), dpd_day(0)) is CollectionStage.CHARGED_OFF
    assert stage(case.model_copy(update={"closed": True}), dpd_day(0)) is CollectionStage.PAID_OFF


# --- The date of a payment ----------------------------------------------------------


@pytest.mark.parametrize(
    ("paid_at", "message"),
    [
        (at_dpd(40, 12) + timedelta(minutes=10), "in the future"),
        (local(date(2024, 1, 14), 12), "before the loan was disbursed"),
        # Reported at DPD 40 as paid on the due date: it would wipe out the penalty.
        (local(FIRST_DUE, 12), "more than 3 days before it was reported"),
        (datetime(2024, 3, 20, 12), "UTC offset"),
    ],
    ids=["future", "before-disbursal", "backdated-past-the-limit", "naive"],
)
def test_paid_at_is_refused_naming_the_field(paid_at: datetime, message: str) -> None:
    with pytest.raises(CaseError, match=rf"^paid_at: .*{message}"):
        payment_date(make_case(), paid_at, at_dpd(40, 12))


def test_a_payment_reported_late_counts_on_the_day_it_was_made() -> None:
    case = make_case()
    made = local(FIRST_DUE, 23, 50)  # paid on the due date, reported after midnight
    dated = payment_date(case, made, local(FIRST_DUE + timedelta(days=1), 0, 10))
    assert dated == made
    after, alloc = apply_payment(case, INST1, dated)
    assert alloc.penalty == 0 and days_past_due(after, FIRST_DUE + timedelta(days=1)) == 0


def test_a_gateway_clock_a_little_ahead_is_dated_now() -> None:
    now = at_dpd(10, 12)
    assert payment_date(make_case(), now + timedelta(minutes=4), now) == now


def test_a_payment_made_before_the_last_ledger_change_counts_right_after_it() -> None:
    """Money actually received is never refused for its date: reported after a later
    payment or restructuring was applied, it is dated just as that change, so the ledger
    stays in order and no penalty already charged is undone."""
    case, _ = apply_payment(make_case(), 10_000, at_dpd(10, 12))
    assert payment_date(case, at_dpd(10, 11), at_dpd(10, 13)) == at_dpd(10, 12)
    assert payment_date(case, at_dpd(10, 13), at_dpd(10, 13)) == at_dpd(10, 13)
