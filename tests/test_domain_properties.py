"""Hypothesis properties of the ledger and the planner."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.calendar import local_date
from domain.case import CallAttempt, Case, Components
from domain.enums import ActionKind, RepaymentMethod
from domain.ledger import (
    apply_payment,
    outstanding,
    overdue_amount,
    penalty_owed,
    remaining_fee,
    remaining_interest,
    remaining_principal,
    today_for,
)
from domain.planner import Outcome, next_action, plan, reconcile, record_outcome
from tests.test_domain_helpers import NY, POLICY, SH, as_local, local, make_case

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DISBURSED = date(2024, 1, 31)  # month ends and Feb 29 in the schedule

loans = st.builds(
    lambda principal, rate, term, method, tz: make_case(
        principal=principal, rate=rate, term=term, method=method, tz=tz, disbursed=DISBURSED, first_due=None
    ),
    principal=st.integers(1, 10**9),
    rate=st.integers(0, 3600),
    term=st.integers(1, 36),
    method=st.sampled_from(list(RepaymentMethod)),
    tz=st.sampled_from([SH, NY]),
)


def moment(case: Case, day_offset: int, minute: int) -> datetime:
    return local(case.disbursed_on + timedelta(days=day_offset), tz=case.timezone) + timedelta(minutes=minute)


def assert_never_negative(case: Case, today: date) -> None:
    for inst in case.installments:
        assert remaining_principal(inst) >= 0
        assert remaining_interest(inst) >= 0
        assert remaining_fee(inst) >= 0
        assert penalty_owed(case, inst, today) >= 0
    owed = outstanding(case, today)
    assert min(owed.penalty, owed.fee, owed.interest, owed.principal) >= 0
    assert overdue_amount(case, today) >= 0


def paid_total(case: Case) -> Components:
    total = Components()
    for inst in case.installments:
        total = total + inst.paid
    return total


@FAST
@given(
    case=loans,
    payments=st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 24 * 60 - 1), st.floats(0, 1)), min_size=1, max_size=6
    ),
)
def test_allocation_conserves_every_minor_unit_and_balances_stay_non_negative(
    case: Case, payments: list[tuple[int, int, float]]
) -> None:
    day = 0
    for gap, minute, share in payments:
        if case.closed:
            break
        day += gap
        when = moment(case, day, minute)
        today = today_for(case, when)
        before = outstanding(case, today)
        amount = max(1, round(share * before.total))
        paid_before = paid_total(case)
        case, alloc = apply_payment(case, amount, when)
        assert alloc.total == amount
        moved = paid_total(case)
        assert (moved.penalty, moved.fee, moved.interest, moved.principal) == (
            paid_before.penalty + alloc.penalty,
            paid_before.fee + alloc.fee,
            paid_before.interest + alloc.interest,
            paid_before.principal + alloc.principal,
        )
        assert min(alloc.penalty, alloc.fee, alloc.interest, alloc.principal) >= 0
        # The payoff falls by exactly the payment: however a day's payments are split,
        # closing the loan that day costs the same.
        assert outstanding(case, today).total == before.total - amount
        assert_never_negative(case, today)
        assert_never_negative(case, today + timedelta(days=45))
    assert paid_total(case).principal <= case.principal


@FAST
@given(case=loans, day=st.integers(0, 500), minute=st.integers(0, 24 * 60 - 1), first=st.floats(0, 0.9))
def test_paying_the_payoff_leaves_zero_and_closes(case: Case, day: int, minute: int, first: float) -> None:
    when = moment(case, day, minute)
    today = today_for(case, when)
    if first:  # a partial payment some days earlier
        earlier = moment(case, max(0, day - 20), minute)
        then = outstanding(case, today_for(case, earlier)).total
        part = min(round(first * then), then - 1)  # partial: leaves something to pay off
        if part > 0:
            case, _ = apply_payment(case, part, earlier)
    payoff = outstanding(case, today)
    case, alloc = apply_payment(case, payoff.total, when)
    assert alloc == payoff
    assert case.closed
    assert outstanding(case, today).total == 0
    assert outstanding(case, today + timedelta(days=90)).total == 0
    assert paid_total(case).principal == case.principal


# --- Planner --------------------------------------------------------------------------


def in_window(instant: datetime, tz: str) -> bool:
    clock = as_local(instant, tz).time()
    return POLICY.contact_window.opens <= clock < POLICY.contact_window.closes


def within_caps(log: list[CallAttempt], at: datetime, tz: str) -> bool:
    caps = POLICY.call_caps
    day = local_date(at, tz)
    same_day = [c for c in log if local_date(c.at, tz) == day]
    per_line: dict[str, int] = {}
    for c in same_day:
        per_line[c.line] = per_line.get(c.line, 0) + 1
    week = [c for c in log if at - timedelta(days=7) < c.at <= at]
    return (
        sum(c.connected for c in same_day) < caps.connected_calls_per_day
        and all(n < caps.dial_attempts_per_line_per_day for n in per_line.values())
        and len(week) < caps.call_attempts_per_7_days
    )


call_logs = st.lists(
    st.tuples(st.integers(1, 8 * 24 * 60), st.sampled_from(["primary", "mobile"]), st.booleans()),
    max_size=16,
)


@FAST
@given(
    tz=st.sampled_from([SH, NY]),
    now_minutes=st.integers(-6 * 24 * 60, 200 * 24 * 60),
    done=st.sets(st.sampled_from([s.id for s in POLICY.ladder])),
    log=call_logs,
    onboard_days=st.integers(-40, 150),
)
def test_planner_never_contacts_outside_the_window_nor_over_a_cap(
    tz: str, now_minutes: int, done: set[str], log: list[tuple[int, str, bool]], onboard_days: int
) -> None:
    first_due = date(2024, 3, 10)  # the spring-forward day in New York
    onboarded = local(first_due + timedelta(days=onboard_days), 11, tz=tz)
    now = max(onboarded, local(first_due, tz=tz) + timedelta(minutes=now_minutes))
    case = make_case(tz=tz, disbursed=date(2024, 2, 10), first_due=first_due, onboarded=onboarded)
    case = reconcile(case, now)
    calls = [CallAttempt(at=now - timedelta(minutes=m), line=line, connected=c) for m, line, c in log]
    update: dict[str, object] = {"call_log": calls}
    if case.episode is not None:
        update["episode"] = case.episode.model_copy(
            update={"done": sorted(done), "credit_noticed_at": now - timedelta(days=3)}
        )
    case = case.model_copy(update=update)
    for action in plan(case, POLICY, now):
        assert action.at >= now
        if action.is_contact:
            assert in_window(action.at, tz), (action.step_id, as_local(action.at, tz))
        if action.kind is ActionKind.VOICE_CALL:
            assert within_caps(calls, action.at, tz), (action.step_id, as_local(action.at, tz))


events = st.lists(
    st.tuples(
        st.sampled_from(["act", "act", "act", "sleep", "pay-overdue", "pay-part"]),
        st.integers(0, 30 * 24),  # hours asleep past the action (a late wake-up)
        st.booleans(),  # delivered
        st.booleans(),  # connected
    ),
    min_size=1,
    max_size=80,
)


@FAST
@given(tz=st.sampled_from([SH, NY]), steps=events)
def test_successive_actions_never_go_back_in_time(tz: str, steps: list[tuple[str, int, bool, bool]]) -> None:
    case = make_case(tz=tz, term=6)
    now = local(case.disbursed_on, 10, tz=tz)
    last: datetime | None = None
    for what, hours, delivered, connected in steps:
        case = reconcile(case, now)
        today = today_for(case, now)
        if what.startswith("pay") and not case.closed:
            owed = (
                overdue_amount(case, today) if what == "pay-overdue" else outstanding(case, today).total // 3
            )
            if owed > 0:
                case, _ = apply_payment(case, owed, now)
                case = reconcile(case, now)
        action = next_action(case, POLICY, now)
        if action is None:
            assert case.closed
            break
        assert action.at >= now
        if last is not None:
            assert action.at >= last
        if action.is_contact:
            assert in_window(action.at, tz)
        if action.kind is ActionKind.VOICE_CALL:
            assert within_caps(case.call_log, action.at, tz)
        last = action.at
        now = action.at + (timedelta(hours=hours) if what == "sleep" else timedelta(0))
        if what == "sleep":
            continue  # woke up late: plan again from the later now, nothing executed
        case = reconcile(case, now)
        dialed = action.kind is ActionKind.VOICE_CALL
        outcome = Outcome(
            delivered=delivered or not action.is_contact,
            dialed=dialed,
            connected=dialed and connected,
            line="primary" if connected else "mobile",
            agent_id="agent-1" if delivered else None,
        )
        case = record_outcome(case, action, outcome, now)
