"""Money through restructurings: an extension moves dates and forgives nothing, every due
date gets its grace, penalty rounding does not depend on the number of payments, a
re-installment charges no period twice, and a restructuring id is applied once.

Each test here failed on the code before the fix it names (issue 7, defects 1-8)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from domain.case import Case, Components
from domain.enums import CollectionStage, RestructuringKind
from domain.ledger import CaseError, apply_payment, outstanding, stage, today_for
from domain.policy import load_policy
from domain.restructure import restructure
from domain.schedule import TermsError
from tests.test_domain_helpers import FIRST_DUE, local, make_case

EXT = RestructuringKind.EXTENSION
REI = RestructuringKind.REINSTALLMENT
WAI = RestructuringKind.WAIVER
INST1 = 110_016  # 92,016 principal + 18,000 interest


def at_dpd(n: int, hh: int = 12) -> datetime:
    return local(FIRST_DUE + timedelta(days=n), hh)


def approved(case: Case, kind: RestructuringKind, now: datetime, rid: str = "R-1", **kw: Any) -> Case:
    return restructure(
        case, restructuring_id=rid, kind=kind, approved_by="risk.lead", approval_ref="APP-9", now=now, **kw
    )


def payoff(case: Case, now: datetime) -> Components:
    return outstanding(case, today_for(case, now))


# --- 1. An extension moves dates; only a waiver forgives ------------------------------


def test_an_extension_forgives_no_interest_earned_before_it() -> None:
    """DPD 40: installments 1 and 2 unpaid, period 3 running. The payoff holds three
    periods' interest (18,000 + 16,620 + 15,219); a 60-day extension moves the due dates
    but the interest already earned is still owed (it used to fall to 18,000)."""
    now = at_dpd(40)
    case = make_case()
    before = payoff(case, now)
    assert (before.interest, before.principal) == (49_839, 1_200_000)
    after = approved(case, EXT, now, extension_days=60)
    assert payoff(after, now) == before
    closed, alloc = apply_payment(after, before.total, now)
    assert closed.closed and alloc == before


def test_an_extension_lets_no_earned_interest_escape_later_either() -> None:
    """Ten days after the extension nothing is overdue and no new period has begun: the
    payoff is the same as on the day of the extension, less nothing."""
    now = at_dpd(40)
    after = approved(make_case(), EXT, now, extension_days=60)
    assert payoff(after, now + timedelta(days=10)).interest == 49_839


# --- 2. The payoff does not depend on how payments are split after an extension ---------


def test_after_an_extension_the_payoff_does_not_depend_on_the_split() -> None:
    now = at_dpd(2)
    after = approved(make_case(), EXT, now, extension_days=30)
    at_once = payoff(after, now).total
    first, _ = apply_payment(after, INST1, now)
    rest = payoff(first, now).total
    assert (at_once, INST1 + rest) == (1_234_620, 1_234_620)


# --- 3. Each due date gets its grace; penalty already charged stays charged -------------


def test_a_moved_due_date_gets_its_own_grace() -> None:
    """Extended at DPD 10 (penalty 690 charged) by 20 days: the new due date is
    2024-03-06. On its days 1-3 no new penalty is charged (the stage says GRACE); from
    day 4 the penalty since the new due date is charged on top of the 690."""
    now = at_dpd(10)
    after = approved(make_case(), EXT, now, extension_days=20)
    new_due = FIRST_DUE + timedelta(days=20)
    for n in (1, 2, 3):
        day = new_due + timedelta(days=n)
        assert stage(after, day) is CollectionStage.GRACE
        assert outstanding(after, day).penalty == 690, n
    # 4 days at 92,016 x 1800 bps x 1.5 / 360 a day = 276.05 -> 276.
    assert outstanding(after, new_due + timedelta(days=4)).penalty == 690 + 276


def test_paid_in_the_new_grace_only_the_penalty_charged_before_remains() -> None:
    now = at_dpd(10)
    after = approved(make_case(), EXT, now, extension_days=20)
    new_due = FIRST_DUE + timedelta(days=20)
    paid, alloc = apply_payment(after, 690 + INST1, local(new_due + timedelta(days=3), 10))
    assert alloc == Components(penalty=690, interest=18_000, principal=92_016)
    assert outstanding(paid, new_due + timedelta(days=30)).penalty == 0


# --- 4. Penalty rounding does not depend on the number of payments -----------------------


def test_penalty_only_payments_never_change_the_total_cost() -> None:
    """Thirty 1-fen payments, one a day, each paying only penalty: closing the loan at DPD
    45 costs exactly as much in all as without them (it used to cost 15 fen more)."""
    case = make_case()
    close_at = at_dpd(45)
    untouched = payoff(case, close_at).total
    paid = 0
    for n in range(10, 40):
        case, alloc = apply_payment(case, 1, at_dpd(n))
        assert alloc == Components(penalty=1)
        paid += 1
    assert paid + payoff(case, close_at).total == untouched


# --- 5. A waiver by amount reaches penalty carried through an extension -----------------


def test_a_waiver_by_amount_reaches_penalty_carried_through_an_extension() -> None:
    now = at_dpd(10)
    after = approved(make_case(), EXT, now, extension_days=20)
    assert payoff(after, now).penalty == 690
    waived = approved(after, WAI, now + timedelta(hours=1), rid="R-2", waive_amount=690)
    assert payoff(waived, now + timedelta(hours=1)).penalty == 0
    assert payoff(waived, now).total == payoff(after, now).total - 690


# --- 6. A re-installment charges no period's interest twice ---------------------------


def test_a_reinstallment_capitalises_the_payoff_and_starts_interest_where_it_ended() -> None:
    """DPD 35 (2024-03-21): the payoff 1,252,674 already holds period 3's full interest
    (it runs to 2024-04-15). The new plan's interest starts there, so its first
    installment falls due 2024-05-15 and the same-day payoff is unchanged (it used to
    rise by a whole month's interest, 18,790)."""
    now = at_dpd(35)
    case = make_case()
    capital = payoff(case, now).total
    assert capital == 1_252_674
    after = approved(case, REI, now, new_term_months=6)
    fresh = [i for i in after.installments if i.seq > 12]
    assert sum(i.principal for i in fresh) == capital
    assert fresh[0].period_start == date(2024, 4, 15)
    assert [i.due_date for i in fresh] == [date(2024, m, 15) for m in range(5, 11)]
    assert fresh[0].interest == 18_790  # 1,252,674 x 1.5 %
    assert payoff(after, now) == Components(principal=capital)
    # Once the new first period begins, its interest is owed as usual.
    assert outstanding(after, date(2024, 4, 15)).interest == 18_790


def test_a_reinstallment_of_a_matured_loan_starts_interest_the_next_day() -> None:
    """Every installment is past due: no period runs, penalty accrues. The new plan's
    first period begins the day after the re-installment."""
    case = make_case(term=3)
    now = local(date(2024, 6, 1), 12)
    before = payoff(case, now)
    after = approved(case, REI, now, new_term_months=3)
    fresh = [i for i in after.installments if i.seq > 3]
    assert fresh[0].period_start == date(2024, 6, 2)
    assert fresh[0].due_date == date(2024, 7, 2)
    assert payoff(after, now).total == before.total


# --- 7. The domain refuses a reused restructuring id ---------------------------------


def test_restructure_refuses_a_reused_restructuring_id() -> None:
    now = at_dpd(10)
    once = approved(make_case(), EXT, now, extension_days=20)
    with pytest.raises(CaseError) as err:
        approved(once, EXT, now, extension_days=20)
    assert err.value.field == "restructuring_id"
    assert "already applied" in str(err.value)


@pytest.mark.parametrize("rid", ["", "   ", None])
def test_restructure_needs_a_restructuring_id(rid: Any) -> None:
    with pytest.raises(CaseError) as err:
        approved(make_case(), EXT, at_dpd(10), rid=rid, extension_days=20)
    assert err.value.field == "restructuring_id"


# --- 8. The term cap is a policy key ---------------------------------------------------


def test_the_term_cap_is_the_policy_key_max_term_months() -> None:
    assert load_policy("standard").max_term_months == 120
    with pytest.raises(TermsError) as err:
        make_case(term=121)
    assert err.value.field == "term_months"
    assert "max_term_months" in str(err.value)
    tight = load_policy("standard").model_copy(update={"max_term_months": 36, "max_new_term_months": 24})
    with pytest.raises(TermsError, match="max_term_months 36"):
        make_case(term=48, policy=tight)
    assert len(make_case(term=36, policy=tight).installments) == 36


def test_a_second_reinstallment_before_the_first_plan_begins_charges_no_day_twice() -> None:
    """Found by review: the second plan started tomorrow although the capital already
    held interest up to the first plan's start (2024-04-15)."""
    now = at_dpd(35)
    once = approved(make_case(), REI, now, new_term_months=6)
    twice = approved(once, REI, now + timedelta(days=3), rid="R-2", new_term_months=12)
    fresh = [i for i in twice.installments if i.seq > 18]
    assert fresh[0].period_start == date(2024, 4, 15)
    assert payoff(twice, local(date(2024, 4, 10), 12)).total == 1_252_674


def test_two_prepayments_on_one_day_leave_the_schedule_of_one() -> None:
    """Found by review: a later installment left with nothing was dropped from the next
    re-amortization, so the future cost depended on the split by a few minor units."""
    case = make_case(principal=11, rate=418, term=8, disbursed=date(2024, 1, 31), first_due=None)
    when = local(date(2024, 1, 31), 10)
    at_once, _ = apply_payment(case, 8, when)
    split, _ = apply_payment(case, 7, when)
    split, _ = apply_payment(split, 1, when)
    assert [(i.principal - i.paid.principal, i.interest) for i in split.installments] == [
        (i.principal - i.paid.principal, i.interest) for i in at_once.installments
    ]
    later = date(2024, 1, 31) + timedelta(days=1200)
    assert outstanding(split, later) == outstanding(at_once, later)
